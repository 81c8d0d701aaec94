"""Test kit: a local /embed_sparse server for users' tests (being built)."""
