"""Use cases over the store, the session and Exchange: sync, reports, actions, bulk jobs, demo."""
