"""dbgov: a database governance proxy for PostgreSQL."""

from dbgov import native

__version__ = "0.1.0"

native.guard()
