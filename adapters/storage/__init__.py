"""Checkpoint storage: a local directory or S3-compatible object storage."""
