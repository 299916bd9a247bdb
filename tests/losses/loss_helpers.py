"""Pieces the loss tests share."""

import numpy as np


def finite_difference_grad(fn, x, eps=1e-6):
  """Central-difference gradient of the scalar fn at x, in float64, one coordinate at a time."""
  x = np.asarray(x, np.float64)
  grad = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    step = np.zeros_like(x)
    step[index] = eps
    grad[index] = (fn(x + step) - fn(x - step)) / (2 * eps)
  return grad
