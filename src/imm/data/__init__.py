"""The local store: SQLite cache, migrations, audit log."""
