"""Repository helpers run by the Makefile (not part of the dbgov package)."""
