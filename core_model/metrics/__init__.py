"""Metrics (numpy / scikit-learn only; no torch, no Qt)."""
