"""Evaluation metrics; each kind lives in its own module (accuracy, retrieval, linear_probe, ...)."""
