"""The trainer: train state, parallel runners, optimizers, checkpoints, the loop and tasks."""

from cnnjax.train.loop import evaluate, run

__all__ = ["evaluate", "run"]
