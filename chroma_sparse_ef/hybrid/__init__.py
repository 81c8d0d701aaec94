"""Hybrid search (dense + sparse, fused with RRF) on Chroma Cloud and embedded Chroma."""
