"""citymesh node: SQLite store, JetStream sync, embedded nats-server, HTTP API and CLI."""
