"""dbgov: a database governance proxy for PostgreSQL."""

__version__ = "0.1.0"
