"""Looking inside a model: per-layer shapes, parameters, MACs and receptive fields."""
