"""Weight import from other frameworks (torchvision state dicts)."""
