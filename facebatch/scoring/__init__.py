"""Anomaly and fake-detection evaluation of reconstruction scores."""
