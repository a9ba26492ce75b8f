"""Dashboard, JSON API and metrics, reading the same store as the ledger."""
