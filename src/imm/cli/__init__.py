"""The command line: parse, call one service, render. No rules live here."""
