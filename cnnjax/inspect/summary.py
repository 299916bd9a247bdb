"""`cnnjax summary`: per-layer output shapes, parameters, MACs and receptive fields.

  summary = summarize("resnet50", input_shape=(224, 224, 3), num_classes=1000)
  print(format_summary(summary))

The command line's `cnnjax summary NAME [--input=H,W,C] [--num-classes=N]` prints the same.
Without an input shape a registered model is measured on its native input
(`cnnjax.models.native_input`: 32x32x1 for lenet5, 572x572x1 for unet, ...), and without
num_classes on its default classes. Detectors whose `__call__` takes `proposals` (R-CNN,
Fast R-CNN) get NUM_PROPOSALS boxes per image; the Summary's notes say what was assumed.

The variables' shapes come from `jax.eval_shape` of the model's `init`; one trace of its
evaluation-mode `apply` (`jax.make_jaxpr`, no real compute) then gives everything else, so
layers that evaluation skips (GoogLeNet's auxiliary heads, built at init and run in
training) are left out of the rows and the MACs, as in torchvision's figures:

- Layers. `flax.linen.intercept_methods` records each module call that owns parameters
  (Conv, Dense, BatchNorm, ...) or pools (cnnjax.models.layers' MaxPool, AvgPool,
  AdaptiveAvgPool, GlobalAvgPool), with its input and output shapes, in call order.
- Multiply-accumulates, as torchvision's reference figures count them: convolutions and
  dense layers only (pooling, BatchNorm, activations and additions are not counted).
  Conv and Dense: output positions x kernel size (kh * kw * in / groups * out);
  ConvTranspose: input positions x kernel size. One image: the positions include the
  leading axis, so a layer that runs on each of a detector's R proposals counts all R
  (its row's output shape is one proposal's).
- Receptive field, per spatial axis: the size r of the input window that one unit sees
  and the jump j (input pixels between adjacent units). The traced program (jaxpr) is
  walked equation by equation, carrying (r, j) for every spatial axis of every array, so
  branches (Inception, DenseNet concatenation, residual additions) are followed exactly:
  an array computed from several arrays takes, per axis, the largest r among them. A
  window of k taps with stride s and dilation d gives r + (k - 1) d j and j s (pooling
  too). Reducing or flattening a spatial axis of n units (global pooling, the flatten
  before a dense layer) leaves the whole extent r + (n - 1) j and no jump. AdaptiveAvgPool
  (a matrix product in the jaxpr) is handled at the layer: its longest bin and the mean
  spacing of its bins. Any other operation is treated as elementwise: inputs of the output's
  shape align axis by axis and other inputs count as reduced. Loops and conditionals are
  not entered but treated so too: only the RoI ops of the detectors have them (and the
  gathers inside), and the features they pool from a box may lie anywhere in the map, so
  their rows see its whole extent. These are the theoretical receptive fields: padding is
  ignored and r can exceed the input size.

Each layer's output is tagged in the jaxpr with `jax.ad_checkpoint.checkpoint_name` (an
identity), which is how receptive fields computed on the jaxpr are matched to layers.
"""

import dataclasses
import inspect
import math
import types
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.extend.core as jex
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.models import layers

_TAG = "cnnjax.summary:"
# Proposals per image for detectors: the roughly 2,000 selective-search boxes that R-CNN and
# Fast R-CNN score per test image. Only their number matters to shapes and costs.
NUM_PROPOSALS = 2000
_POOLS = (layers.MaxPool, layers.AvgPool, layers.AdaptiveAvgPool, layers.GlobalAvgPool)


@dataclasses.dataclass(frozen=True)
class LayerRow:
  """One layer call.

  name: module path ("layer1_0/conv1"); kind: module class name; kernel: "3x3/2"
  (window / stride) or "". output_shape excludes the leading axis (the batch of one, or a
  detector's proposals for layers that run on each). receptive_field and jump
  are (height, width) in input pixels; jump is None once the spatial axes are reduced.
  """

  name: str
  kind: str
  output_shape: tuple[int, ...]
  kernel: str
  params: int
  macs: int
  receptive_field: tuple[float, float] | None
  jump: tuple[float, float] | None


@dataclasses.dataclass(frozen=True)
class Summary:
  """The layers of `model` on one input of `input_shape` [H, W, C], with totals.

  total_params counts every parameter: the rows' sum, plus parameters of layers that do
  not run in evaluation (GoogLeNet's auxiliary heads) and of modules that are not layers
  but own parameters themselves. total_macs is the rows' sum. notes: what was assumed
  rather than given (native input, default classes, proposals), one sentence each.
  """

  model: str
  input_shape: tuple[int, int, int]
  rows: tuple[LayerRow, ...]
  total_params: int
  total_macs: int
  notes: tuple[str, ...] = ()


# --- Receptive-field bookkeeping over the jaxpr -------------------------------------------

# Per array axis: None, or (spatial dim name, size r, jump j) in input pixels.
_Axis = tuple[str, float, float] | None


@dataclasses.dataclass(frozen=True)
class _Field:
  """Receptive field of one array: per-axis entries, and the extents of reduced axes."""

  axes: tuple[_Axis, ...]
  reduced: Mapping[str, float] = dataclasses.field(default_factory=dict)


def _empty(ndim: int) -> _Field:
  return _Field((None,) * ndim)


def _max_reduced(*reduced: Mapping[str, float]) -> dict[str, float]:
  merged: dict[str, float] = {}
  for mapping in reduced:
    for dim, size in mapping.items():
      merged[dim] = max(size, merged.get(dim, 0.0))
  return merged


def _extent(axis: _Axis, units: int) -> dict[str, float]:
  """The input extent seen by `units` adjacent units along a spatial axis, once reduced."""
  if axis is None:
    return {}
  dim, size, jump = axis
  return {dim: size + (units - 1) * jump}


def _fully_reduced(field: _Field, shape: Sequence[int], ndim: int) -> _Field:
  """Every spatial axis of `field` (an array of `shape`) reduced into an array of `ndim`."""
  extents = [_extent(axis, n) for axis, n in zip(field.axes, shape)]
  return _Field((None,) * ndim, _max_reduced(field.reduced, *extents))


def _wider(a: _Axis, b: _Axis) -> _Axis:
  if a is None:
    return b
  if b is None:
    return a
  return a if (a[1], a[2]) >= (b[1], b[2]) else b


def _grow(
  axis: _Axis, window: int, stride: int, window_dilation: int = 1, base_dilation: int = 1
) -> _Axis:
  """A sliding window over one axis (convolution or pooling; base dilation = transposed)."""
  if axis is None:
    return None
  dim, size, jump = axis
  span = (window - 1) * window_dilation + 1
  units = math.ceil(span / base_dilation)
  return dim, size + (units - 1) * jump, jump * stride / base_dilation


def _merge(
  fields: Sequence[_Field], shapes: Sequence[Sequence[int]], out_shape: Sequence[int]
) -> _Field:
  """An elementwise-like result: same-shaped inputs align by axis, others reduce."""
  axes: list[_Axis] = [None] * len(out_shape)
  reduced = []
  for field, shape in zip(fields, shapes):
    if tuple(shape) == tuple(out_shape):
      axes = [_wider(a, b) for a, b in zip(axes, field.axes)]
      reduced.append(field.reduced)
    else:
      reduced.append(_fully_reduced(field, shape, 0).reduced)
  return _Field(tuple(axes), _max_reduced(*reduced))


def _conv(eqn, fields, shapes) -> _Field:
  lhs_spec, rhs_spec, out_spec = eqn.params["dimension_numbers"]
  rhs_shape = shapes[1]
  lhs = fields[0]
  axes: list[_Axis] = [None] * len(shapes[0])
  axes[out_spec[0]] = lhs.axes[lhs_spec[0]]
  for i in range(len(lhs_spec) - 2):
    axes[out_spec[2 + i]] = _grow(
      lhs.axes[lhs_spec[2 + i]],
      rhs_shape[rhs_spec[2 + i]],
      eqn.params["window_strides"][i],
      eqn.params["rhs_dilation"][i],
      eqn.params["lhs_dilation"][i],
    )
  # Features mix across channels: a spatial axis used as features is reduced.
  feature = _extent(lhs.axes[lhs_spec[1]], shapes[0][lhs_spec[1]])
  return _Field(tuple(axes), _max_reduced(lhs.reduced, fields[1].reduced, feature))


def _reduce_window(eqn, fields, shapes) -> _Field:
  params = eqn.params
  field = fields[0]
  axes = tuple(
    _grow(
      axis,
      params["window_dimensions"][a],
      params["window_strides"][a],
      params["window_dilation"][a],
      params["base_dilation"][a],
    )
    for a, axis in enumerate(field.axes)
  )
  return _Field(axes, dict(field.reduced))


def _reduce(eqn, fields, shapes) -> _Field:
  field, shape = fields[0], shapes[0]
  dropped = set(eqn.params["axes"])
  kept = tuple(axis for a, axis in enumerate(field.axes) if a not in dropped)
  extents = [_extent(field.axes[a], shape[a]) for a in dropped]
  return _Field(kept, _max_reduced(field.reduced, *extents))


def _broadcast_in_dim(eqn, fields, shapes) -> _Field:
  field, shape = fields[0], shapes[0]
  out_shape = eqn.params["shape"]
  axes: list[_Axis] = [None] * len(out_shape)
  extents = []
  for a, d in enumerate(eqn.params["broadcast_dimensions"]):
    if shape[a] == out_shape[d]:
      axes[d] = field.axes[a]
    else:
      extents.append(_extent(field.axes[a], shape[a]))
  return _Field(tuple(axes), _max_reduced(field.reduced, *extents))


def _reshape(eqn, fields, shapes) -> _Field:
  """Axes that survive a reshape unsplit keep their field; merged or split axes reduce."""
  field, shape = fields[0], shapes[0]
  out_shape = eqn.params["new_sizes"]
  out_starts = {}
  product = 1
  for d, n in enumerate(out_shape):
    out_starts.setdefault((product, n), d)
    product *= n
  axes: list[_Axis] = [None] * len(out_shape)
  extents = []
  product = 1
  for a, n in enumerate(shape):
    d = out_starts.get((product, n))
    if d is not None:
      axes[d] = field.axes[a]
    else:
      extents.append(_extent(field.axes[a], n))
    product *= n
  return _Field(tuple(axes), _max_reduced(field.reduced, *extents))


def _squeeze(eqn, fields, shapes) -> _Field:
  field = fields[0]
  dropped = {d % len(field.axes) for d in eqn.params["dimensions"]}
  kept = tuple(axis for a, axis in enumerate(field.axes) if a not in dropped)
  return _Field(kept, _max_reduced(field.reduced, *(_extent(field.axes[a], 1) for a in dropped)))


def _transpose(eqn, fields, shapes) -> _Field:
  field = fields[0]
  return _Field(tuple(field.axes[p] for p in eqn.params["permutation"]), dict(field.reduced))


def _dot_general(eqn, fields, shapes) -> _Field:
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
  lhs, rhs = fields
  axes = [_wider(lhs.axes[a], rhs.axes[b]) for a, b in zip(lhs_batch, rhs_batch)]
  axes += [lhs.axes[a] for a in range(len(lhs.axes)) if a not in (*lhs_contract, *lhs_batch)]
  axes += [rhs.axes[b] for b in range(len(rhs.axes)) if b not in (*rhs_contract, *rhs_batch)]
  extents = [_extent(lhs.axes[a], shapes[0][a]) for a in lhs_contract]
  extents += [_extent(rhs.axes[b], shapes[1][b]) for b in rhs_contract]
  return _Field(tuple(axes), _max_reduced(lhs.reduced, rhs.reduced, *extents))


def _concatenate(eqn, fields, shapes) -> _Field:
  axes: list[_Axis] = [None] * len(shapes[0])
  for field in fields:
    axes = [_wider(a, b) for a, b in zip(axes, field.axes)]
  return _Field(tuple(axes), _max_reduced(*(field.reduced for field in fields)))


def _pad(eqn, fields, shapes) -> _Field:
  field = fields[0]
  axes = []
  for axis, (_, _, interior) in zip(field.axes, eqn.params["padding_config"]):
    axes.append(axis if axis is None else (axis[0], axis[1], axis[2] / (1 + interior)))
  return _Field(tuple(axes), _max_reduced(field.reduced, fields[1].reduced))


def _slice(eqn, fields, shapes) -> _Field:
  field = fields[0]
  strides = eqn.params["strides"] or (1,) * len(field.axes)
  axes = tuple(
    axis if axis is None else (axis[0], axis[1], axis[2] * s)
    for axis, s in zip(field.axes, strides)
  )
  return _Field(axes, dict(field.reduced))


def _same_rank_as_first(eqn, fields, shapes) -> _Field:
  """Windows that keep the axes' spacing (dynamic_slice, rev, cumulative ops)."""
  return _Field(fields[0].axes, _max_reduced(*(f.reduced for f in fields)))


_RULES = {
  "conv_general_dilated": _conv,
  "reduce_window_max": _reduce_window,
  "reduce_window_min": _reduce_window,
  "reduce_window_sum": _reduce_window,
  "reduce_window": _reduce_window,
  "reduce_sum": _reduce,
  "reduce_max": _reduce,
  "reduce_min": _reduce,
  "reduce_prod": _reduce,
  "reduce_and": _reduce,
  "reduce_or": _reduce,
  "argmax": _reduce,
  "argmin": _reduce,
  "broadcast_in_dim": _broadcast_in_dim,
  "reshape": _reshape,
  "squeeze": _squeeze,
  "transpose": _transpose,
  "dot_general": _dot_general,
  "concatenate": _concatenate,
  "pad": _pad,
  "slice": _slice,
  "dynamic_slice": _same_rank_as_first,
  "rev": _same_rank_as_first,
  "cumsum": _same_rank_as_first,
  "cummax": _same_rank_as_first,
}


# A loop body runs many times and a cond one of its branches: neither is walked as a call.
_CONTROL_FLOW = ("scan", "while", "cond")


def _sub_jaxpr(eqn) -> jex.ClosedJaxpr | None:
  """The called jaxpr of a call-like equation (jit, custom_jvp/vjp, remat), if any."""
  if eqn.primitive.name in _CONTROL_FLOW:
    return None
  for value in eqn.params.values():
    if isinstance(value, jex.ClosedJaxpr) and len(value.jaxpr.invars) == len(eqn.invars):
      return value
    if isinstance(value, jex.Jaxpr) and len(value.invars) == len(eqn.invars):
      return jex.ClosedJaxpr(value, ())
  return None


class _FieldTracer:
  """Walks a jaxpr carrying a _Field per variable; collects the fields of tagged layers."""

  def __init__(self, overrides: Mapping[int, Any]):
    self.tagged: dict[int, _Field] = {}
    self.inputs: dict[int, _Field] = {}
    self.overrides = overrides  # row index -> fn(input field) -> output field

  def run(self, jaxpr: jex.Jaxpr, in_fields: Sequence[_Field]) -> list[_Field]:
    env: dict[jex.Var, _Field] = dict(zip(jaxpr.invars, in_fields))

    def read(var) -> _Field:
      if isinstance(var, jex.Literal) or var not in env:
        return _empty(len(var.aval.shape))
      return env[var]

    for eqn in jaxpr.eqns:
      fields = [read(v) for v in eqn.invars]
      shapes = [tuple(v.aval.shape) for v in eqn.invars]
      out_fields = self._equation(eqn, fields, shapes)
      for var, field in zip(eqn.outvars, out_fields):
        env[var] = field
    return [read(v) for v in jaxpr.outvars]

  def _equation(self, eqn, fields, shapes) -> list[_Field]:
    name = eqn.primitive.name
    if name == "name" and str(eqn.params["name"]).startswith(_TAG):
      where, index = eqn.params["name"][len(_TAG) :].split(":")
      index = int(index)
      if where == "in":
        self.inputs[index] = fields[0]
        return fields
      if index in self.overrides:
        fields = [self.overrides[index](self.inputs[index])]
      self.tagged[index] = fields[0]
      return fields
    if name in _RULES:
      return [_RULES[name](eqn, fields, shapes)]
    sub = _sub_jaxpr(eqn)
    if sub is not None:
      return self.run(sub.jaxpr, fields)
    # Elementwise and anything unknown: same-shaped inputs align, the rest reduce.
    return [_merge(fields, shapes, tuple(v.aval.shape)) for v in eqn.outvars]


# --- Layer recording ------------------------------------------------------------------------


def _adaptive_pool_field(output_size: int, in_shape: Sequence[int]):
  """AdaptiveAvgPool's field: bin i spans [floor(i n / m), ceil((i + 1) n / m)) of n units.

  The longest bin sets the size; the jump is the mean spacing of the bins' starts, so that
  reducing all m outputs covers exactly the n inputs (0 when upsampling from one unit).
  """

  def override(field: _Field) -> _Field:
    axes = list(field.axes)
    for a in (1, 2):
      n = in_shape[a]
      longest = max(
        -((-(i + 1) * n) // output_size) - (i * n) // output_size for i in range(output_size)
      )
      last_start = ((output_size - 1) * n) // output_size
      spacing = last_start / (output_size - 1) if output_size > 1 else n
      axes[a] = _grow(axes[a], longest, 1)
      if axes[a] is not None:
        axes[a] = (axes[a][0], axes[a][1], axes[a][2] * spacing)
    return _Field(tuple(axes), dict(field.reduced))

  return override


def _window(module: nn.Module) -> str:
  """ "KHxKW/stride" (and " gN" for N groups) for convolutions and pools, else ""."""
  if isinstance(module, (nn.Conv, nn.ConvTranspose)):
    kernel = module.kernel_size
    kernel = (kernel,) * 2 if isinstance(kernel, int) else tuple(kernel)
    strides = module.strides or 1
    stride = strides if isinstance(strides, int) else strides[0]
    groups = getattr(module, "feature_group_count", 1)
    return "x".join(map(str, kernel)) + f"/{stride}" + (f" g{groups}" if groups > 1 else "")
  if isinstance(module, (layers.MaxPool, layers.AvgPool)):
    return f"{module.window}x{module.window}/{module.stride}"
  if isinstance(module, layers.AdaptiveAvgPool):
    return f"->{module.output_size}x{module.output_size}"
  return ""


def _macs(module: nn.Module, own: Mapping[str, Any], in_shape, out_shape) -> int:
  kernel = own.get("kernel")
  if kernel is None:
    return 0
  if isinstance(module, nn.ConvTranspose):
    return math.prod(in_shape[:-1]) * kernel.size
  if isinstance(module, (nn.Conv, nn.Dense)):
    return math.prod(out_shape[:-1]) * kernel.size
  return 0


class _Recorder:
  """A method interceptor that records layer calls and tags their outputs in the trace."""

  def __init__(self):
    self.rows: list[dict[str, Any] | None] = []
    self.overrides: dict[int, Any] = {}
    self.seen: set[tuple[str, ...]] = set()

  def __call__(self, next_fun, args, kwargs, context):
    module = context.module
    if (
      context.method_name != "__call__"
      or not module.path
      or not args
      or not isinstance(args[0], jax.Array)
    ):
      return next_fun(*args, **kwargs)
    index = len(self.rows)
    self.rows.append(None)  # Reserved now so that rows keep call order.
    x = args[0]
    if isinstance(module, layers.AdaptiveAvgPool):
      self.overrides[index] = _adaptive_pool_field(module.output_size, x.shape)
      x = checkpoint_name(x, f"{_TAG}in:{index}")
    out = next_fun(x, *args[1:], **kwargs)
    params = module.variables.get("params", {})
    own = {k: v for k, v in params.items() if not isinstance(v, Mapping)}
    if not (own or isinstance(module, _POOLS)) or not isinstance(out, jax.Array):
      self.overrides.pop(index, None)
      return out
    first_call = module.path not in self.seen
    self.seen.add(module.path)
    self.rows[index] = {
      "name": "/".join(module.path),
      "kind": type(module).__name__,
      "output_shape": tuple(out.shape[1:]),
      "kernel": _window(module),
      "params": sum(v.size for v in own.values()) if first_call else 0,
      "macs": _macs(module, own, x.shape, out.shape),
    }
    return checkpoint_name(out, f"{_TAG}out:{index}")


def _rf_pair(field: _Field | None) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
  if field is None:
    return None, None
  found = {axis[0]: (axis[1], axis[2]) for axis in field.axes if axis is not None}
  if "h" in found and "w" in found:
    return (found["h"][0], found["w"][0]), (found["h"][1], found["w"][1])
  if "h" in field.reduced and "w" in field.reduced:
    return (field.reduced["h"], field.reduced["w"]), None
  return None, None


def summarize(
  name_or_model: str | nn.Module,
  input_shape: Sequence[int] | None = None,
  num_classes: int | None | types.EllipsisType = ...,
  num_proposals: int = NUM_PROPOSALS,
  **model_kwargs,
) -> Summary:
  """Per-layer summary of a model on one [H, W, C] input, without running it.

  Args:
    name_or_model: a registered model name (`cnnjax.models.names()`) or a Flax Module
      called as `model.init(rngs, x, train=False)` and `model.apply(variables, x,
      train=False)` with x [N, H, W, C]; a Module whose `__call__` takes `proposals` is
      called as `model.apply(variables, x, proposals, train=False)`, proposals [N, R, 4].
    input_shape: (H, W, C) of one image; None means the named model's native input
      (`cnnjax.models.native_input`), and is an error with a Module.
    num_classes: classes of the classifier (None: pooled features); `...` keeps the model's
      default. Only with a name, as are further `**model_kwargs` for `cnnjax.models.create`.
    num_proposals: R, the boxes given to a model that takes proposals.

  Returns:
    A Summary: one row per layer call of the evaluation-mode forward pass in call order,
    total parameters and MACs, and notes on what was assumed.

  Raises:
    UsageError: unknown model, a malformed input shape or proposal count, or an input too
      small for the model.
  """
  is_name = not isinstance(name_or_model, nn.Module)  # The registry rejects a non-string.
  notes = []
  if input_shape is None:
    if not is_name:
      raise UsageError(
        "give summarize() an input_shape (H, W, C) for a Module; only registered "
        "names have a native input."
      )
    input_shape = models.native_input(name_or_model)
    notes.append(f"{name_or_model}'s native input {'x'.join(map(str, input_shape))}")
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise UsageError(f"input shape must be three positive sizes H,W,C, got {input_shape}.")
  if num_classes is not ...:
    model_kwargs["num_classes"] = num_classes
  if is_name:
    model, model_name = models.create(name_or_model, **model_kwargs), name_or_model
    if num_classes is ... and hasattr(model, "num_classes"):
      notes.append(f"{model_name}'s default num_classes={model.num_classes}")
  else:
    if model_kwargs:
      raise UsageError("set num_classes and other fields on the module itself, not in summarize().")
    model, model_name = name_or_model, type(name_or_model).__name__

  inputs = (jax.ShapeDtypeStruct((1, *input_shape), jnp.float32),)
  if "proposals" in inspect.signature(type(model).__call__).parameters:
    if num_proposals < 1:
      raise UsageError(f"num_proposals must be at least 1, got {num_proposals}.")
    inputs += (jax.ShapeDtypeStruct((1, num_proposals, 4), jnp.float32),)
    notes.append(
      f"{num_proposals} proposals per image (their positions change no shape or "
      f"cost); layers that run on every proposal show one proposal's output and "
      f"count the MACs of all {num_proposals}"
    )
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  variables = jax.eval_shape(lambda inputs: model.init(rngs, *inputs, train=False), inputs)
  recorder = _Recorder()

  def apply(inputs, variables):
    with nn.intercept_methods(recorder):
      return model.apply(variables, *inputs, train=False)

  closed = jax.make_jaxpr(apply)(inputs, variables)
  image_field = _Field((None, ("h", 1.0, 1.0), ("w", 1.0, 1.0), None))
  # The image is the first input; proposals and the variables' leaves see no pixels.
  in_fields = [image_field] + [_empty(len(v.aval.shape)) for v in closed.jaxpr.invars[1:]]
  tracer = _FieldTracer(recorder.overrides)
  tracer.run(closed.jaxpr, in_fields)

  rows = []
  for index, row in enumerate(recorder.rows):
    if row is None:
      continue
    receptive_field, jump = _rf_pair(tracer.tagged.get(index))
    rows.append(LayerRow(**row, receptive_field=receptive_field, jump=jump))
  total_params = sum(leaf.size for leaf in jax.tree.leaves(variables.get("params", {})))
  return Summary(
    model=model_name,
    input_shape=input_shape,
    rows=tuple(rows),
    total_params=total_params,
    total_macs=sum(row.macs for row in rows),
    notes=tuple(notes),
  )


def _number(value: float) -> str:
  return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def _pair_text(pair: tuple[float, float] | None) -> str:
  if pair is None:
    return "-"
  h, w = pair
  return _number(h) if h == w else f"{_number(h)}x{_number(w)}"


def format_summary(summary: Summary) -> str:
  """A plain-text table of `summary`: one line per layer, then the totals."""
  header = ("layer", "type", "output", "kernel", "params", "MACs", "RF", "jump")
  lines = [header]
  for row in summary.rows:
    lines.append(
      (
        row.name,
        row.kind,
        "x".join(map(str, row.output_shape)),
        row.kernel,
        f"{row.params:,}",
        f"{row.macs:,}",
        _pair_text(row.receptive_field),
        _pair_text(row.jump),
      )
    )
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  numeric = {4, 5, 6, 7}

  def render(line):
    cells = [
      cell.rjust(w) if i in numeric else cell.ljust(w)
      for i, (cell, w) in enumerate(zip(line, widths))
    ]
    return "  ".join(cells).rstrip()

  rule = "-" * len(render(header))
  h, w, c = summary.input_shape
  body = [render(header), rule, *(render(line) for line in lines[1:]), rule]
  body.append(
    f"{summary.model} on {h}x{w}x{c}: {summary.total_params:,} parameters, "
    f"{summary.total_macs:,} MACs ({summary.total_macs / 1e9:.3f} G)"
  )
  body.extend(f"assumed: {note}" for note in summary.notes)
  return "\n".join(body)
