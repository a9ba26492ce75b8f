"""Tests of the ledger's pure core: canonical encoding, Merkle tree, signed notes."""
