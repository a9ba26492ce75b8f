"""The embedded default: an embedded PostgreSQL with the demo targets, their
synthetic dataset, and the demo identities and policy that `dbgov up` starts with."""
