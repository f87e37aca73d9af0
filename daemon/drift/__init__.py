"""Drift: concept drift on the error stream and input drift on the features (river's detectors)."""
