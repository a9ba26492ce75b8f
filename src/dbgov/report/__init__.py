"""Reports built from the ledger: SOC 2 evidence (`soc2.py`), the `dbgov report` command."""
