"""Shared pieces of the torchvision parity tests: seeded torch models, images, layout
transposes between torch and Flax, and errors measured against the reference's scale.

Import it only after `pytest.importorskip("torch")`: it imports torch at module level.
"""

import numpy as np
import torch
import torchvision


def random_torch_model(name: str, **kwargs) -> torch.nn.Module:
  """torchvision `name` (weights=None) with seeded random weights, in evaluation mode.

  BatchNorm scales, biases and running statistics are randomised too, so that evaluation-
  mode BatchNorm is not the identity and a statistic mapped to the wrong layer shows.
  """
  torch.manual_seed(0)
  model = getattr(torchvision.models, name)(weights=None, **kwargs)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
  return model.eval()


def nchw_images(batch: int, size: int, seed: int = 0) -> np.ndarray:
  """[batch, 3, size, size] float32 standard normal images, NCHW for torch."""
  return np.random.default_rng(seed).normal(size=(batch, 3, size, size)).astype(np.float32)


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
  """[N, C, H, W] (torch) -> [N, H, W, C] (Flax)."""
  return np.asarray(x).transpose(0, 2, 3, 1)


def torch_param_to_flax(weight: np.ndarray) -> np.ndarray:
  """A torch parameter (or its gradient) in the layout of the Flax leaf it maps to.

  4-D conv weights [O, I/groups, kH, kW] -> kernels [kH, kW, I/groups, O], 2-D dense
  weights [O, I] -> kernels [I, O]; 1-D tensors (biases, BatchNorm scales) are unchanged.
  """
  weight = np.asarray(weight)
  if weight.ndim == 4:
    return weight.transpose(2, 3, 1, 0)
  if weight.ndim == 2:
    return weight.T
  return weight


def relative_error(got, want) -> float:
  """max |got - want| / max |want|: the worst difference against the reference's scale.

  Elementwise ratios are meaningless where the reference is near zero (many logits and
  gradient entries of a randomly initialised network are); the scale is kept from 0 by
  float32's smallest normal number, so that two all-zero tensors compare as equal.
  """
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  scale = max(np.abs(want).max(initial=0.0), np.finfo(np.float32).tiny)
  return float(np.abs(got - want).max(initial=0.0) / scale)


def relative_l2_error(got, want) -> float:
  """||got - want||_2 / ||want||_2: the error over the whole tensor, which a few outlying
  entries move much less than the worst-entry `relative_error`."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  scale = max(np.linalg.norm(want), np.finfo(np.float32).tiny)
  return float(np.linalg.norm(got - want) / scale)


def bn_sample_counts(model: torch.nn.Module) -> tuple[dict[str, int], list]:
  """Forward hooks recording, per BatchNorm2d prefix, the values each channel is averaged
  over (N * H * W of its input) in the next forward pass.

  Returns:
    (counts, handles): `counts` fills in during the forward pass; call `h.remove()` on
    each handle afterwards.
  """
  counts: dict[str, int] = {}
  handles = []
  for prefix, module in model.named_modules():
    if isinstance(module, torch.nn.BatchNorm2d):

      def hook(module, inputs, output, prefix=prefix):
        del module, output
        counts[prefix] = inputs[0].numel() // inputs[0].shape[1]

      handles.append(module.register_forward_hook(hook))
  return counts, handles
