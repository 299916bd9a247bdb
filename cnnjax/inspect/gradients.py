"""Gradient maps of a model's outputs: Grad-CAM, saliency, SmoothGrad, effective receptive field.

Pure, jit-compiled functions of a model (static), its variables and a batch of images
x [B, H, W, C] as the model takes them (normalised); each returns arrays, no figures:

  cam = grad_cam(model, variables, x, classes, "layer4")         # [B, h, w], >= 0
  heat = smoothgrad(model, variables, x, classes, key)             # [B, H, W], >= 0
  heat = saliency(model, variables, x, classes)                    # [B, H, W], >= 0
  erf = effective_receptive_field(model, variables, x, "layer2")   # [B, H, W], >= 0

`classes` [B] int picks each image's class; None takes the predicted one. Every model runs
in evaluation mode (BatchNorm on running statistics, no dropout). Grad-CAM and the
saliency maps need a classifier (a zoo model with num_classes set: its output is logits
[B, K]); the effective receptive field works on any model's spatial network
(`cnnjax.inspect.network`), so on detectors' and embedding nets' backbones and U-Nets too.

- Grad-CAM (Selvaraju et al. 2017): with A [B, h, w, K] the map of `stage` and y_c the
  class score, the weights are alpha_k = mean over (i, j) of dy_c / dA_ijk and the map is
  ReLU(sum_k alpha_k A_k) at the stage's resolution (`upsample` brings it to the image).
  The gradient with respect to A comes from adding a zero to A inside the model's forward
  pass, where the model hands the map to its feature taps (`cnnjax.models.feature_maps`):
  the classifier runs once, whole, exactly as it classifies.
- Saliency (Simonyan et al. 2014): |dy_c / dx|, the largest over colour channels.
- SmoothGrad (Smilkov et al. 2017): the gradient averaged over `samples` copies of x with
  Gaussian noise of std `noise` x (max - min of the image), then as saliency.
- Effective receptive field (Luo et al. 2016): |d (sum over channels of one unit of a
  map) / dx| summed over colour channels; average it over images for the paper's picture.
  The theoretical field it lies in is `cnnjax.inspect.receptive_field`'s.
"""

import contextlib
import functools
import threading
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import UsageError
from cnnjax.inspect import network as network_lib
from cnnjax.models import feature_maps

Variables = dict[str, Any]
_TAPS_LOCK = threading.RLock()


class _ByIdentity:
  """A model whose fields do not hash (a dict of backbone_kwargs), as a static jit argument:
  equal only to itself, so each such model object compiles once."""

  def __init__(self, module: nn.Module):
    self.module = module


def _model_jit(static_argnames: tuple[str, ...]):
  """jax.jit with `model` (the first argument) and `static_argnames` static, any model."""

  def decorate(function):
    @functools.partial(jax.jit, static_argnames=("model", *static_argnames))
    @functools.wraps(function)  # Its signature places the static arguments.
    def jitted(model, *args, **kwargs):
      return function(model.module if isinstance(model, _ByIdentity) else model, *args, **kwargs)

    @functools.wraps(function)
    def call(model, *args, **kwargs):
      try:
        hash(model)
      except TypeError:
        model = _IDENTITIES.setdefault(id(model), (model, _ByIdentity(model)))[1]
      return jitted(model, *args, **kwargs)

    return call

  return decorate


# id -> (model, its _ByIdentity): the model is kept alive, so that its id is not reused.
_IDENTITIES: dict[int, tuple[nn.Module, _ByIdentity]] = {}


class _Tap:
  """The map of `stage` seen in one forward pass, and the zero added to it."""

  def __init__(self, stage: str, delta: jax.Array):
    self.stage = stage
    self.delta = delta
    self.value: jax.Array | None = None


@contextlib.contextmanager
def _perturbed(stage: str, delta: jax.Array) -> Iterator[_Tap]:
  """While tracing the forward pass: records the map `stage` and adds `delta` to it.

  The feature API hands every map to `Taps.__call__`, which returns it unchanged; for the
  length of the block it returns map + delta for `stage` (the first time it passes).
  """
  original = feature_maps.Taps.__call__
  tap = _Tap(stage, delta)

  def perturbed_call(taps, name, x):
    x = original(taps, name, x)
    if name == tap.stage and tap.value is None:
      tap.value = x
      return x + tap.delta.astype(x.dtype)
    return x

  with _TAPS_LOCK:
    feature_maps.Taps.__call__ = perturbed_call
    try:
      yield tap
    finally:
      feature_maps.Taps.__call__ = original


def _check_classifier(model: nn.Module, what: str) -> None:
  if getattr(model, "feature_names", None) is None or getattr(model, "num_classes", 0) is None:
    raise UsageError(
      f"{what} needs a classifier (a zoo model with num_classes set); "
      f"{type(model).__name__} gives no class scores."
    )


def _logits(model: nn.Module, variables: Variables, x: jax.Array) -> jax.Array:
  out = model.apply(variables, x, train=False)
  if not (isinstance(out, jax.Array) and out.ndim == 2):
    raise UsageError(
      f"{type(model).__name__} does not return class scores [B, K]; Grad-CAM "
      "and saliency need a classifier."
    )
  return out.astype(jnp.float32)


def _classes(logits: jax.Array, classes: jax.Array | None) -> jax.Array:
  return jnp.argmax(logits, -1) if classes is None else jnp.asarray(classes, jnp.int32)


@_model_jit(())
def logits(model: nn.Module, variables: Variables, x: jax.Array) -> jax.Array:
  """The classifier's scores [B, K] (float32) of images x [B, H, W, C]."""
  _check_classifier(model, "logits")
  return _logits(model, variables, x)


@_model_jit(("stage",))
def grad_cam(
  model: nn.Module, variables: Variables, x: jax.Array, classes: jax.Array | None, stage: str
) -> jax.Array:
  """Grad-CAM of `classes` at the feature map `stage`.

  Args:
    model: a zoo classifier (`cnnjax.models.create(name, num_classes=K)`).
    variables: its variables.
    x: images [B, H, W, C].
    classes: [B] int, the class of each image; None: the predicted class.
    stage: one of `cnnjax.models.feature_names(model)` (the deepest is the paper's choice).

  Returns:
    float32 [B, h, w] >= 0, the map's resolution; zero where no location supports the class.

  Raises:
    UsageError: `model` is no classifier, or has no map `stage` (the message lists them).
  """
  _check_classifier(model, "Grad-CAM")
  feature_maps.check_stages(model, stage)
  shape = jax.eval_shape(lambda x: feature_maps.features(model, variables, x, stage)[stage], x)

  def scores(delta):
    with _perturbed(stage, delta) as tap:
      out = _logits(model, variables, x)
    if tap.value is None:
      raise AssertionError(f"{type(model).__name__} never tapped its map {stage!r}.")
    return out, tap.value

  out, backward, maps = jax.vjp(scores, jnp.zeros(shape.shape, shape.dtype), has_aux=True)
  chosen = _classes(out, classes)
  (grads,) = backward(jax.nn.one_hot(chosen, out.shape[-1], dtype=out.dtype))
  weights = jnp.mean(grads.astype(jnp.float32), axis=(1, 2))  # [B, K]
  return jax.nn.relu(jnp.einsum("bhwk,bk->bhw", maps.astype(jnp.float32), weights))


def _input_gradient(
  model: nn.Module, variables: Variables, x: jax.Array, classes: jax.Array
) -> jax.Array:
  def score(images):
    out = _logits(model, variables, images)
    return jnp.take_along_axis(out, classes[:, None], axis=-1).sum()

  return jax.grad(score)(x)


@_model_jit(())
def saliency(
  model: nn.Module, variables: Variables, x: jax.Array, classes: jax.Array | None = None
) -> jax.Array:
  """|d score / d x| of `classes` (None: predicted), the largest over channels: [B, H, W]."""
  _check_classifier(model, "saliency")
  chosen = _classes(_logits(model, variables, x), classes)
  return jnp.max(jnp.abs(_input_gradient(model, variables, x, chosen)), axis=-1)


@_model_jit(("samples",))
def smoothgrad(
  model: nn.Module,
  variables: Variables,
  x: jax.Array,
  classes: jax.Array | None,
  key: jax.Array,
  samples: int = 16,
  noise: float = 0.15,
) -> jax.Array:
  """SmoothGrad of `classes` (None: predicted): [B, H, W] >= 0.

  Args:
    model, variables: a zoo classifier and its variables.
    x: images [B, H, W, C].
    classes: [B] int or None.
    key: PRNG key of the noise.
    samples: noisy copies averaged (the paper: 50; 16 is most of the way).
    noise: its std as a fraction of each image's value range (the paper: 0.1-0.2).
  """
  _check_classifier(model, "SmoothGrad")
  chosen = _classes(_logits(model, variables, x), classes)
  spread = (jnp.max(x, axis=(1, 2, 3)) - jnp.min(x, axis=(1, 2, 3))) * noise  # [B]

  def noisy_gradient(key):
    noisy = x + spread[:, None, None, None] * jax.random.normal(key, x.shape, x.dtype)
    return _input_gradient(model, variables, noisy, chosen).astype(jnp.float32)

  grads = jax.lax.map(noisy_gradient, jax.random.split(key, samples))
  return jnp.max(jnp.abs(jnp.mean(grads, axis=0)), axis=-1)


@_model_jit(("stage",))
def effective_receptive_field(
  model: nn.Module,
  variables: Variables,
  x: jax.Array,
  stage: str,
  unit: Sequence[int] | jax.Array | None = None,
) -> jax.Array:
  """|d (one unit of map `stage`, summed over channels) / d x| summed over channels.

  Args:
    model: any model; its spatial network (`cnnjax.inspect.network.network`) is used.
    variables: the model's variables.
    x: images [B, H, W, C].
    stage: a map of the network (`network(model).names(...)`).
    unit: (row, column) of the unit in that map (clipped to it; an array, so that other
      units reuse the compiled function); None: the middle one (`h // 2, w // 2`).

  Returns:
    float32 [B, H, W] >= 0: each image's gradient magnitude (Luo et al. average them).

  Raises:
    UsageError: no map `stage`.
  """
  net = network_lib.network(model)

  def unit_value(images):
    maps = net.maps(variables, images, stage)[stage]
    where = (
      jnp.array([maps.shape[1] // 2, maps.shape[2] // 2])
      if unit is None
      else jnp.asarray(unit, jnp.int32)
    )
    row = jnp.clip(where[0], 0, maps.shape[1] - 1)
    col = jnp.clip(where[1], 0, maps.shape[2] - 1)
    return jnp.sum(
      jax.lax.dynamic_slice(maps, (0, row, col, 0), (maps.shape[0], 1, 1, maps.shape[3])).astype(
        jnp.float32
      )
    )

  return jnp.sum(jnp.abs(jax.grad(unit_value)(x).astype(jnp.float32)), axis=-1)


@functools.partial(jax.jit, static_argnames=("size",))
def upsample(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
  """maps [B, h, w] -> [B, H, W] bilinearly (units centred as the image's pixels)."""
  return jax.image.resize(maps.astype(jnp.float32), (maps.shape[0], *size), method="bilinear")


@jax.jit
def peaks(maps: jax.Array) -> jax.Array:
  """(row, column) int32 [B, 2] of each map's largest value (the first on ties)."""
  flat = jnp.argmax(maps.reshape(maps.shape[0], -1), axis=-1)
  return jnp.stack([flat // maps.shape[2], flat % maps.shape[2]], axis=-1).astype(jnp.int32)
