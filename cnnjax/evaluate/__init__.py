"""Evaluation metrics, one kind per module (accuracy, retrieval, linear_probe, ...)."""
