"""Model provenance: which tables feed which model, and what changed between retrains.

An ML owner declares models in the policy file (`models:`, see policy/model.py).
From then on:

- every statement that changes a model input carries, in its ledger event, the
  models it affects (`registry.py`, `effects.py`; the proxy session asks
  `model_links`), and rules can match on them (`stmt.models`, `match.models`);
- `dbgov models retrain` (or `POST /api/models/{name}/retrain`) seals a point in
  the ledger for a model version, optionally with a digest of its input rows
  (`markers.py`, `fingerprint.py`);
- `dbgov models report` answers, for a version, what changed in its inputs since
  the previous one, who changed it and with whose approval, with receipts that
  verify offline (`report.py`).

Submodules are imported where used: the proxy only needs `registry`, which
pulls in nothing beyond `sql/` and `policy/`.
"""
