"""The tamper-evident audit ledger.

Every decision the gate makes is encoded canonically (``canonical``), hashed into
an RFC 6962 Merkle log (``merkle``) and committed to by signed checkpoints that
witnesses may cosign (``note``). These three modules are the pure cryptographic
core: no I/O, no clock, no store. Journal, sequencer and storage build on them.
"""
