"""Every model cnnjax converts from torchvision behaves as torchvision does: in evaluation,
in training (logits and the updated BatchNorm running statistics) and in its gradients.

For each model a seeded random torchvision model (weights=None, random BatchNorm statistics)
is converted and both frameworks run the same float32 images [2, 3, 64, 64] (GoogLeNet
80x80):

1. evaluation mode: logits;
2. training mode, one forward: logits (GoogLeNet: also both auxiliary heads) and every
   BatchNorm running mean and variance afterwards, torch's mapped through the converter
   (torch momentum 0.1 is Flax momentum 0.9). Dropout is 0 in both frameworks
   (torchvision's `dropout` / `dropout_aux`, cnnjax's `dropout_rate` / `aux_dropout_rate`)
   so that training mode is deterministic; AlexNet and plain VGG have no BatchNorm, so
   their training mode is then the deterministic network itself;
3. in both of those passes, gradients of loss = sum(outputs * W) (a fixed random W per
   output) against torch autograd, with respect to the input (NCHW -> NHWC) and three
   named parameters: the first conv's kernel, a middle BatchNorm's scale (a middle conv's
   kernel without BatchNorm) and the classifier's kernel (OIHW -> HWIO, [out, in] -> [in,
   out]); GoogLeNet also an auxiliary head's classifier, in training.

Each test prints one `PARITY {...}` JSON line (`pytest -s` shows them) giving, for every
quantity, [cnnjax vs float32 torch, cnnjax vs float64 torch, float32 vs float64 torch]
relative errors: max |got - want| / max |want| per tensor (the worst leaf for statistics)
and, for gradients, also ||got - want||_2 / ||want||_2 ("l2").

Float64 torch is the reference. Every error of cnnjax against it must be below TOLERANCE
(the max-entry error for logits and statistics, the l2 error for gradients) or, where
float32 torch is itself further off, below NOISE_FACTOR times float32 torch's error:
cnnjax must be about as exact as torch, not bit-equal to it. Float32 gradients are
ill-conditioned here, in torch as in cnnjax: a ReLU input within rounding of 0 (VGG-16 at
64x64 has several) takes the other branch in one framework and moves the input-side
gradients by up to ~2% (the classifier's stay ~1e-6), and in training BatchNorm's backward
over 8 values per channel cancels heavily (float32 torch's own ResNet-152 input gradient
is 10% off its float64 one). Hence TOLERANCE["grad"] = 3e-2: a layout or mapping error
gives ~1, and the forward checks catch any smaller difference in the maths.
`test_float64_matches_torch_to_rounding` shows that the gradient differences are rounding:
in float64, cnnjax agrees with torch to ~1e-12 on the two worst models.

Running variances: cnnjax's BatchNorm updates them as torch does, from the unbiased batch
variance (divided by n - 1, n = N * H * W), so they are compared with torch's own;
`test_running_var_matches_torch_unbiased_update` checks ResNet-18's directly, where
flax.linen.BatchNorm's biased update (divided by n) is 14% off on layer4's (n = 8).
"""

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import torchvision_helpers as helpers  # noqa: E402

from cnnjax import models  # noqa: E402
from cnnjax.convert import mapping  # noqa: E402
from cnnjax.convert.torchvision import convert  # noqa: E402

pytestmark = pytest.mark.torch

NUM_CLASSES = 10
BATCH = 2
# Bounds on cnnjax's relative error against float64 torch (max-entry for logits and
# statistics, l2 for gradients); a quantity that float32 torch itself gets less exactly may
# be off by up to NOISE_FACTOR times float32 torch's own error (see the module doc).
TOLERANCE = {"logits": 1e-4, "stats": 1e-4, "grad": 3e-2}
NOISE_FACTOR = 4.0
_STATISTICS = ("running_mean", "running_var")


RESNET_PARAMS = ["conv1/kernel", "layer3_0/bn2/scale", "fc/kernel"]


def _vgg_params(name: str) -> list[str]:
  middle = "bn3_1/scale" if name.endswith("_bn") else "conv3_1/kernel"
  return ["conv1_1/kernel", middle, "fc8/kernel"]


def _slow(*values):
  return pytest.param(*values, marks=pytest.mark.slow)


def _flat(tree) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}


def _state_copy(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
  return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _statistics(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
  """Copies of the BatchNorm running statistics, which training updates in place."""
  return {k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith(_STATISTICS)}


def _torch_key(name: str, state_dict, flax_path: str) -> str:
  """The torch state-dict key that the converter maps to Flax leaf `flax_path`."""
  module, _, leaf = flax_path.rpartition("/")
  prefixes, _ = mapping.prefix_mapping(name, state_dict)
  (prefix,) = [p for p, path in prefixes.items() if path == module]
  return f"{prefix}.{'weight' if leaf in ('kernel', 'scale') else leaf}"


def _mapped_statistics(name: str, state_dict, statistics) -> dict[str, np.ndarray]:
  """`statistics` (torch running means and variances) as the converter maps them: flat
  batch_stats paths -> float32 arrays. `state_dict` supplies the rest of each layer."""
  prefixes, _ = mapping.prefix_mapping(name, state_dict)
  norms = {p: path for p, path in prefixes.items() if f"{p}.running_mean" in statistics}
  tensors = {
    f"{p}.{leaf}": (statistics if leaf.startswith("running") else state_dict)[f"{p}.{leaf}"]
    for p in norms
    for leaf in ("weight", "bias", *_STATISTICS)
  }
  return _flat(mapping.map_state_dict(tensors, norms)["batch_stats"])


def _torch_pass(model, images, loss_weights, train: bool, param_keys) -> dict:
  """One forward and backward of loss = sum(outputs * W) in `model`'s dtype.

  Returns float64 numpy: outputs [logits, (aux1, aux2)], input_grad [N, C, H, W] and
  param_grads {torch key: gradient}.
  """
  dtype = next(model.parameters()).dtype
  model.train(train)
  model.zero_grad(set_to_none=True)
  x = torch.from_numpy(images).to(dtype).requires_grad_(True)
  outputs = model(x)
  if isinstance(outputs, tuple):  # GoogLeNet: (logits, aux2, aux1); cnnjax: (logits, aux1, aux2).
    logits, aux2, aux1 = outputs
    outputs = [logits, aux1, aux2]
  else:
    outputs = [outputs]
  loss = sum((out * torch.from_numpy(w).to(dtype)).sum() for out, w in zip(outputs, loss_weights))
  loss.backward()
  parameters = dict(model.named_parameters())
  return {
    "outputs": [out.detach().double().numpy() for out in outputs],
    "input_grad": x.grad.double().numpy(),
    "param_grads": {
      k: parameters[k].grad.double().numpy() for k in param_keys if parameters[k].grad is not None
    },
  }


def _torch_reference(name, torch_kwargs, images, loss_weights, named_params) -> dict:
  """torchvision in float32 and in float64 (the same weights): an evaluation pass, then a
  training pass (which updates the running statistics), each with its gradients.

  Returns:
    (float32 run, float64 run); a run holds "eval" and "train" passes,
    the statistics "after" the training pass and the BatchNorm sample counts;
    the float32 run also its full state dict before training and the parameters' keys.
  """
  runs = []
  for dtype in (torch.float32, torch.float64):
    model = helpers.random_torch_model(name, num_classes=NUM_CLASSES, **torch_kwargs).to(dtype)
    run = {}
    if dtype == torch.float32:
      run["state_dict"] = _state_copy(model)
      keys = {path: _torch_key(name, run["state_dict"], path) for path in named_params}
      run["param_keys"] = keys
    run["eval"] = _torch_pass(model, images, loss_weights, False, keys.values())
    counts, handles = helpers.bn_sample_counts(model)
    run["train"] = _torch_pass(model, images, loss_weights, True, keys.values())
    for handle in handles:
      handle.remove()
    run.update(after=_statistics(model), counts=counts)
    runs.append(run)
    del model
  return tuple(runs)


def _cnnjax_run(
  name, state_dict, cnnjax_kwargs, images, loss_weights, named_params, dtype=jnp.float32
) -> dict:
  """cnnjax's evaluation and training passes, with gradients of the same loss with respect
  to the input and the `named_params` leaves, from one compiled program, in `dtype`
  (float64 needs `jax.enable_x64`)."""
  variables = jax.tree.map(
    lambda a: np.asarray(a, dtype), convert(name, state_dict, **cnnjax_kwargs)
  )
  _, implied_kwargs = mapping.prefix_mapping(name, state_dict)
  model = models.create(name, **implied_kwargs, **cnnjax_kwargs, dtype=dtype)
  images = images.astype(dtype)
  loss_weights = [w.astype(dtype) for w in loss_weights]
  params = _flat(variables["params"])
  leaves = {path: params.pop(path) for path in named_params}
  batch_stats = variables.get("batch_stats", {})

  def loss_fn(leaves, x, rest, train):
    variables = {
      "params": flax.traverse_util.unflatten_dict({**rest, **leaves}, sep="/"),
      "batch_stats": batch_stats,
    }
    outputs, updates = model.apply(variables, x, train=train, mutable=["batch_stats"])
    outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
    loss = sum(jnp.sum(out * w) for out, w in zip(outputs, loss_weights))
    return loss, (outputs, updates.get("batch_stats", {}))

  grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)

  @jax.jit
  def passes(leaves, x, rest):
    return {train: grad_fn(leaves, x, rest, train) for train in (False, True)}

  results = {}
  for train, ((_, (outputs, stats)), (leaf_grads, input_grad)) in passes(
    leaves, helpers.nchw_to_nhwc(images), params
  ).items():
    results["train" if train else "eval"] = {
      "outputs": [np.asarray(out) for out in outputs],
      "statistics": _flat(stats),
      "input_grad": np.asarray(input_grad),
      "param_grads": _flat(leaf_grads),
    }
  return results


def _errors(got, want32, want64, error=helpers.relative_error) -> list[float]:
  """[cnnjax vs torch float32, cnnjax vs torch float64, torch float32 vs float64]."""
  return [error(got, want32), error(got, want64), error(want32, want64)]


def _grad_errors(got, want32, want64) -> dict[str, list[float]]:
  """_errors of a gradient: worst-entry ("max") and whole-tensor ("l2") relative errors."""
  return {
    "max": _errors(got, want32, want64),
    "l2": _errors(got, want32, want64, helpers.relative_l2_error),
  }


def _worst(errors: list[list[float]]) -> list[float]:
  return [max(column) for column in zip(*errors)]


def _check_parity(name, torch_kwargs, cnnjax_kwargs, size, named_params, num_outputs=1):
  """Runs both frameworks, prints the errors as one PARITY JSON line, asserts the bounds."""
  images = helpers.nchw_images(BATCH, size)
  rng = np.random.default_rng(1)
  loss_weights = [
    rng.normal(size=(BATCH, NUM_CLASSES)).astype(np.float32) for _ in range(num_outputs)
  ]
  refs = ref32, ref64 = _torch_reference(name, torch_kwargs, images, loss_weights, named_params)
  got = _cnnjax_run(name, ref32["state_dict"], cnnjax_kwargs, images, loss_weights, named_params)

  errors = {}
  for mode in ("eval", "train"):
    outputs = got[mode]["outputs"]
    assert len(outputs) == len(ref32[mode]["outputs"]) == (num_outputs if mode == "train" else 1)
    for i, out in enumerate(outputs):
      errors[f"{mode} {'logits' if i == 0 else f'aux{i}'}"] = _errors(
        out, ref32[mode]["outputs"][i], ref64[mode]["outputs"][i]
      )
    errors[f"{mode} grad input"] = _grad_errors(
      got[mode]["input_grad"], *(helpers.nchw_to_nhwc(r[mode]["input_grad"]) for r in refs)
    )
    for path in named_params:
      key = ref32["param_keys"][path]
      if key not in ref32[mode]["param_grads"]:  # GoogLeNet's aux heads do not run in eval.
        continue
      errors[f"{mode} grad {path}"] = _grad_errors(
        got[mode]["param_grads"][path],
        *(helpers.torch_param_to_flax(r[mode]["param_grads"][key]) for r in refs),
      )

  if ref32["counts"]:
    state_dict = ref32["state_dict"]
    got_stats = got["train"]["statistics"]
    assert len(got_stats) == 2 * len(ref32["counts"])  # Every BatchNorm, mean and var.
    wants = [_mapped_statistics(name, state_dict, r["after"]) for r in refs]
    assert got_stats.keys() == wants[0].keys()
    for stat in ("mean", "var"):
      keys = [k for k in got_stats if k.endswith(f"/{stat}")]
      errors[f"running_{stat}"] = _worst(
        [_errors(got_stats[k], *(w[k] for w in wants)) for k in keys]
      )
  print("\nPARITY " + json.dumps({"model": name, **errors}))

  for what, values in errors.items():
    if " grad " in what:
      kind, (_, error, torch_error) = "grad", values["l2"]
    else:
      kind, (_, error, torch_error) = ("stats" if what.startswith("running") else "logits"), values
    bound = max(TOLERANCE[kind], NOISE_FACTOR * torch_error)
    assert error < bound, (
      f"{name} {what}: relative error {error:.3g} against float64 torch "
      f"(float32 torch: {torch_error:.3g}) >= {bound:.3g}"
    )


@pytest.mark.parametrize(
  "name", ["resnet18", "resnet34", "resnet50", _slow("resnet101"), _slow("resnet152")]
)
def test_resnet_parity(name):
  _check_parity(name, {}, {}, size=64, named_params=RESNET_PARAMS)


@pytest.mark.parametrize(
  "name", ["densenet121", _slow("densenet161"), _slow("densenet169"), _slow("densenet201")]
)
def test_densenet_parity(name):
  # torchvision's DenseNet drop_rate defaults to 0: no dropout to disable.
  _check_parity(
    name,
    {},
    {},
    size=64,
    named_params=["conv0/kernel", "denseblock3_denselayer1/norm2/scale", "classifier/kernel"],
  )


@pytest.mark.parametrize(
  "name",
  [
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    _slow("vgg19"),
    _slow("vgg19_bn"),
  ],
)
def test_vgg_parity(name):
  # 64 -> 2x2 after the five pools: the 7x7 adaptive pool repeats values.
  _check_parity(
    name, {"dropout": 0.0}, {"dropout_rate": 0.0}, size=64, named_params=_vgg_params(name)
  )


def test_alexnet_parity():
  # 64 is about the smallest input (63): 15 -> 7 -> 3 -> 1 before the 6x6 adaptive pool.
  _check_parity(
    "alexnet",
    {"dropout": 0.0},
    {"dropout_rate": 0.0},
    size=64,
    named_params=["conv1/kernel", "conv3/kernel", "fc8/kernel"],
  )


def test_googlenet_parity():
  # torchvision's GoogLeNet with weights=None defaults to aux_logits=True and
  # transform_input=False; the converter infers aux_logits from the aux keys and cnnjax's
  # transform_input defaults to False too (pretrained weights need True on both sides).
  # 80x80 gives inception4a a 5x5 map, so the heads' 4x4 adaptive pool is not the identity,
  # and odd sizes for the ceil-mode pools.
  _check_parity(
    "googlenet",
    {
      "aux_logits": True,
      "transform_input": False,
      "init_weights": False,
      "dropout": 0.0,
      "dropout_aux": 0.0,
    },
    {"dropout_rate": 0.0, "aux_dropout_rate": 0.0},
    size=80,
    named_params=[
      "conv1/conv/kernel",
      "inception4a/branch2_1/bn/scale",
      "fc/kernel",
      "aux1/fc2/kernel",
    ],
    num_outputs=3,
  )


def test_mobilenet_v2_parity():
  _check_parity(
    "mobilenet_v2",
    {"dropout": 0.0},
    {"dropout_rate": 0.0},
    size=64,
    named_params=["features_0/conv/kernel", "features_9/conv_1/bn/scale", "classifier/kernel"],
  )


@pytest.mark.parametrize(
  "name, torch_kwargs, cnnjax_kwargs, named_params",
  [
    ("vgg16", {"dropout": 0.0}, {"dropout_rate": 0.0}, _vgg_params("vgg16")),
    _slow("resnet50", {}, {}, RESNET_PARAMS),
  ],
)
def test_float64_matches_torch_to_rounding(name, torch_kwargs, cnnjax_kwargs, named_params):
  # The two models whose float32 gradients differ most from torch's, at 64x64: VGG-16 in
  # evaluation (ReLU inputs within rounding of 0), ResNet-50 in training (BatchNorm's
  # backward cancels). In float64 both frameworks agree to rounding: the float32
  # differences are rounding amplified, not different maths.
  images = helpers.nchw_images(BATCH, 64)
  loss_weights = [np.random.default_rng(1).normal(size=(BATCH, NUM_CLASSES))]
  ref32, ref64 = _torch_reference(name, torch_kwargs, images, loss_weights, named_params)
  with jax.enable_x64(True):
    got = _cnnjax_run(
      name,
      ref32["state_dict"],
      cnnjax_kwargs,
      images,
      loss_weights,
      named_params,
      dtype=jnp.float64,
    )
  errors = {}
  for mode in ("eval", "train"):
    errors[f"{mode} logits"] = helpers.relative_error(
      got[mode]["outputs"][0], ref64[mode]["outputs"][0]
    )
    errors[f"{mode} grad input"] = helpers.relative_error(
      got[mode]["input_grad"], helpers.nchw_to_nhwc(ref64[mode]["input_grad"])
    )
    for path in named_params:
      errors[f"{mode} grad {path}"] = helpers.relative_error(
        got[mode]["param_grads"][path],
        helpers.torch_param_to_flax(ref64[mode]["param_grads"][ref32["param_keys"][path]]),
      )
  print("\nPARITY64 " + json.dumps({"model": name, **errors}))
  for what, error in errors.items():
    assert error < 1e-10, f"{name} {what} in float64: relative error {error:.3g}"


def test_running_var_matches_torch_unbiased_update():
  model = helpers.random_torch_model("resnet18", num_classes=NUM_CLASSES)
  variables = convert("resnet18", _state_copy(model))
  images = helpers.nchw_images(BATCH, 64)
  model.train()
  with torch.no_grad():
    model(torch.from_numpy(images))
  want = _flat(convert("resnet18", model.state_dict())["batch_stats"])
  _, updates = models.create("resnet18", num_classes=NUM_CLASSES).apply(
    variables, helpers.nchw_to_nhwc(images), train=True, mutable=["batch_stats"]
  )
  got = _flat(updates["batch_stats"])
  # layer4's BatchNorms average n = 2 * 2 * 2 = 8 values: n / (n - 1) is 14% on the update.
  worst = max(helpers.relative_error(got[k], want[k]) for k in got if k.endswith("/var"))
  assert worst < TOLERANCE["stats"]


def test_converted_variables_do_not_alias_the_state_dict():
  # A training-mode forward or an optimizer step rewrites torch's tensors in place; the
  # converted variables must keep the values they were converted from.
  model = helpers.random_torch_model("resnet18", num_classes=NUM_CLASSES)
  state_dict = model.state_dict()
  variables = convert("resnet18", state_dict)
  expected = _flat(convert("resnet18", _state_copy(model)))
  with torch.no_grad():
    for tensor in state_dict.values():
      tensor.add_(1)
  got = _flat(variables)
  assert got.keys() == expected.keys()
  for key in got:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
