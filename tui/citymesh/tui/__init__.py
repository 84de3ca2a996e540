"""citymesh coordinators' terminal UI (Textual). Talks to a node only over its HTTP API."""
