"""The trainer: train state, parallel runners, optimizers, checkpoints, the loop and tasks."""
