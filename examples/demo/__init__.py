"""The chatkit-adapters demo: a ChatKit server backed by a real SQLite or PostgreSQL store."""
