"""`cnnjax plan`: a config's train and eval steps compiled for a TPU topology one need not have.

    cnnjax plan --config=experiments/configs/resnet50_imagenet.py --topology=v5e:2x4

The steps are the ones `cnnjax train` runs, not a copy: `Experiment(config, devices=...)`
over the abstract, compile-only devices of the topology (libtpu's, through
`jax.experimental.topologies`), then `Experiment.compile_steps()`, lowered with the train
state (`Experiment.abstract_state()`), the metric sums and a batch given as
`jax.ShapeDtypeStruct`s with their shardings, and compiled by XLA's TPU compiler. It
reports per chip what `Compiled.memory_analysis()` and `Compiled.cost_analysis()` say,
and a roofline bound from the chip's peak FLOP/s and HBM bandwidth. Nothing runs on a
TPU: every figure is the compiler's, none is measured.

The batch is built from the dataset's description (`pipeline.dataset_info`), so no example
is read for it. A dataset that is not prepared on this machine (ImageNet on a laptop) is
described by its TFDS feature spec alone, through `tfds.testing.mock_data`; the plan says so.

When the step does not fit the chip's HBM, the plan compiles other per-chip batch sizes
(a bisection guided by a linear fit of memory against batch) to find the largest that
fits, and names the knobs that would help. Compiling the TPU step needs libtpu
(`pip install 'jax[tpu]'`, or cnnjax's `tpu` extra); the checks of the input need nothing.
"""

import copy
import dataclasses
import importlib.util
import math
import re
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from cnnjax.errors import UsageError
from cnnjax.train.parallel import REPLICATED, SHARDED

GiB = 2**30
MiB = 2**20


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation, per chip.

  Attributes:
    name: the generation as topology names spell it ("v5e").
    hbm_bytes: HBM capacity.
    peak_flops: peak bfloat16 FLOP/s.
    hbm_bandwidth: HBM bandwidth, bytes/s.
    dims: dimensions of its topology shapes (2: AxB, 3: AxBxC).
    chip_config: libtpu's `chip_config_name` that makes one JAX device per chip.
  """

  name: str
  hbm_bytes: int
  peak_flops: float
  hbm_bandwidth: float
  dims: int
  chip_config: str = "default"


# Per chip, as Google Cloud's TPU system-architecture pages give them
# (cloud.google.com/tpu/docs/v4, .../v5e, .../v5p, .../v6e): peak bf16 compute, HBM
# capacity, HBM bandwidth. v4: 275 TFLOP/s, 32 GiB, 1.2 TB/s. v5e: 197 TFLOP/s, 16 GiB,
# 819 GB/s. v5p: 459 TFLOP/s, 95 GiB, 2.76 TB/s. v6e (Trillium): 918 TFLOP/s, 32 GiB,
# 1.64 TB/s. v4 and v5p chips hold two TensorCores that JAX drives as one device
# ("megacore"); libtpu makes one device per chip with chip_config_name="megacore".
CHIPS = {
  "v4": Chip("v4", 32 * GiB, 275e12, 1.2e12, 3, "megacore"),
  "v5e": Chip("v5e", 16 * GiB, 197e12, 819e9, 2),
  "v5p": Chip("v5p", 95 * GiB, 459e12, 2.76e12, 3, "megacore"),
  "v6e": Chip("v6e", 32 * GiB, 918e12, 1.64e12, 2),
}


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice by name, "v5e:2x4": its chip and the shape of its chip grid."""

  name: str
  chip: Chip
  shape: tuple[int, ...]

  @property
  def num_chips(self) -> int:
    return math.prod(self.shape)


def parse_topology(name: str) -> Topology:
  """`name` ("v5e:2x4", "v4:2x2x2") checked against `CHIPS`, without libtpu.

  Raises:
    UsageError: an unknown generation or a malformed shape.
  """
  examples = "e.g. v5e:2x4 (8 chips), v5e:16x16 (256) or v4:4x4x4 (64)"
  match = re.fullmatch(r"\s*([a-z0-9]+):(\d+(?:x\d+)*)\s*", str(name).lower())
  if not match:
    raise UsageError(f"--topology={name} is not GENERATION:SHAPE; {examples}.")
  generation, shape_text = match.groups()
  if generation not in CHIPS:
    raise UsageError(
      f"unknown TPU generation {generation!r} in --topology={name}; choose one "
      f"of {', '.join(CHIPS)}, {examples}."
    )
  chip = CHIPS[generation]
  shape = tuple(int(n) for n in shape_text.split("x"))
  if len(shape) != chip.dims or min(shape) < 1:
    form = "x".join("ABC"[: chip.dims])
    raise UsageError(
      f"a {generation} slice is {form} chips of {chip.dims} positive numbers, "
      f"not {shape_text}; {examples}."
    )
  return Topology(f"{generation}:{shape_text}", chip, shape)


def libtpu_available() -> bool:
  """Whether libtpu (which compiles for TPU) is installed."""
  return importlib.util.find_spec("libtpu") is not None


def topology_devices(topology: Topology) -> list[jax.Device]:
  """The abstract (compile-only) devices of `topology`, one per chip.

  Raises:
    UsageError: libtpu is missing, or it rejects the shape (e.g. v5e:3x3).
  """
  if not libtpu_available():
    raise UsageError(
      "cnnjax plan compiles with libtpu, which is not installed; install it "
      "with pip install 'jax[tpu]' (in a separate venv if this one runs on "
      "GPU)."
    )
  from jax.experimental import topologies

  options = {}
  if min(topology.shape[:2]) < 2:  # One host with fewer chips than libtpu's default 2x2.
    options["chips_per_host_bounds"] = (min(topology.shape[0], 2), min(topology.shape[1], 2), 1)
  try:
    description = topologies.get_topology_desc(
      topology_name=topology.name,
      platform="tpu",
      chip_config_name=topology.chip.chip_config,
      **options,
    )
  except Exception as error:  # noqa: BLE001 -- libtpu's JaxRuntimeError, one line of it.
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "lockfile" in reason:
      raise UsageError(
        "another process holds libtpu (/tmp/libtpu_lockfile); wait for it to "
        "end, or set ALLOW_MULTIPLE_LIBTPU_LOAD=1 to compile beside it (safe "
        "when neither runs on a TPU)."
      ) from None
    raise UsageError(
      f"libtpu rejects --topology={topology.name} ({reason}); use a slice "
      "shape that Cloud TPU offers, e.g. v5e:2x2, v5e:2x4, v5e:4x4."
    ) from None
  devices = list(description.devices)
  if len(devices) != topology.num_chips:
    raise UsageError(
      f"libtpu made {len(devices)} devices of --topology={topology.name}, "
      f"not one per chip ({topology.num_chips}); cnnjax plan cannot count "
      "per-chip memory for it."
    )
  return devices


def check_batch(global_batch: int, topology: Topology, key: str = "batch_size") -> int:
  """The per-chip batch; UsageError unless the chips divide `global_batch`."""
  n = topology.num_chips
  if global_batch > 0 and global_batch % n == 0:
    return global_batch // n
  below, above = global_batch // n * n, (global_batch // n + 1) * n
  nearest = f"--config.{key}={above}" if below <= 0 else f"--config.{key}={below} or {above}"
  raise UsageError(
    f"{key} {global_batch} is not divisible by the {n} chips of "
    f"{topology.name}; use a multiple of {n}, e.g. {nearest}."
  )


@dataclasses.dataclass(frozen=True)
class StepCost:
  """What XLA says of one compiled step, per chip (bytes, FLOPs, seconds)."""

  per_chip_batch: int
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  flops: float
  bytes_accessed: float
  compile_seconds: float
  ops: tuple[tuple[str, int], ...] = ()  # `op_census` of the lowered step.
  out_of_memory: str = ""  # The TPU compiler's refusal, when it ran out of HBM.

  @property
  def total_bytes(self) -> int:
    """Peak HBM of the step: inputs, outputs not aliased to (donated) inputs, temporaries,
    the program (out of memory: the temporaries the compiler asked for, a lower bound)."""
    return (
      self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes
    )

  def fits(self, chip: "Chip") -> bool:
    return not self.out_of_memory and self.total_bytes <= chip.hbm_bytes


def op_census(stablehlo: str) -> tuple[tuple[str, int], ...]:
  """Convolutions and matmuls of a lowered program, by operand dtype and precision.

  From the StableHLO text (`Lowered.as_text()`): what the step asks XLA for, e.g. f32
  convolutions in a bf16 config, or matmuls at Precision.HIGHEST (several bf16 passes on
  TPU). Returns (("convolution bf16", 158), ("dot_general f32 HIGHEST", 3), ...), sorted.
  """
  counts: dict[str, int] = {}
  for line in stablehlo.splitlines():
    match = re.search(r"stablehlo\.(convolution|dot_general)\b", line)
    if not match or " : " not in line:
      continue
    dtype = re.search(r"tensor<(?:[0-9?]+x)*([a-z0-9]+)>", line.rsplit(" : ", 1)[1])
    precision = re.search(r"precision(?:_config)? = \[([A-Z_]+)", line)
    name = " ".join(
      [match.group(1), dtype.group(1) if dtype else "?"]
      + ([precision.group(1)] if precision and precision.group(1) != "DEFAULT" else [])
    )
    counts[name] = counts.get(name, 0) + 1
  return tuple(sorted(counts.items()))


def step_cost(
  compiled: Any, per_chip_batch: int, compile_seconds: float, ops: tuple[tuple[str, int], ...] = ()
) -> StepCost:
  """The memory and cost analyses of `compiled` (a `jax.stages.Compiled`)."""
  memory = compiled.memory_analysis()
  costs = compiled.cost_analysis()
  if isinstance(costs, (list, tuple)):  # Older jax: one dict per program.
    costs = costs[0] if costs else {}
  costs = costs or {}
  return StepCost(
    per_chip_batch=per_chip_batch,
    argument_bytes=int(memory.argument_size_in_bytes),
    output_bytes=int(memory.output_size_in_bytes),
    alias_bytes=int(memory.alias_size_in_bytes),
    temp_bytes=int(memory.temp_size_in_bytes),
    code_bytes=int(memory.generated_code_size_in_bytes),
    flops=float(costs.get("flops", float("nan"))),
    bytes_accessed=float(costs.get("bytes accessed", float("nan"))),
    compile_seconds=compile_seconds,
    ops=ops,
  )


def roofline(cost: StepCost, chip: Chip) -> tuple[float, str]:
  """(images/s per chip at the roofline, "compute" or "memory": the bound that binds)."""
  compute, memory = cost.flops / chip.peak_flops, cost.bytes_accessed / chip.hbm_bandwidth
  seconds = max(compute, memory)
  if not seconds > 0:
    return float("nan"), "unknown"
  return cost.per_chip_batch / seconds, "compute" if compute >= memory else "HBM bandwidth"


def largest_fitting(
  fits: Callable[[int], tuple[bool, int]],
  failing: int,
  total: int,
  limit: int,
  granule: int = 1,
  max_compiles: int = 6,
) -> tuple[int, int, int]:
  """The largest per-chip batch (a multiple of `granule`) for which `fits` holds.

  A bisection between a batch known to fit and one known not to (`failing`), whose guesses
  are taken where the straight line through the two brackets' peak memory reaches `limit`
  (memory grows about linearly with the batch, so a few compiles do), falling back to the
  midpoint whenever the line's last guess narrowed the bracket by less than a quarter.

  Args:
    fits: per-chip batch -> (fits, peak bytes): one compile.
    failing: a per-chip batch that does not fit.
    total: its peak bytes.
    limit: the bytes a chip has.
    granule: batches are multiples of it (metric learning: K faces per identity).
    max_compiles: compiles allowed, the first (one granule per chip) included.
  Returns:
    (the largest batch found to fit, 0 if not even one granule does; the smallest found
    not to fit, one granule above it when the search finished; compiles made).
  """
  hi, hi_total = failing // granule, total
  ok, lo_total = fits(granule)
  compiles, lo = 1, 1
  if not ok:
    return 0, granule, compiles
  use_line = True
  while hi - lo > 1 and compiles < max_compiles:
    width = hi - lo
    guess = (lo + hi) // 2
    if use_line and hi_total > lo_total:
      estimate = lo + int((limit - lo_total) * (hi - lo) / (hi_total - lo_total))
      guess = min(max(estimate, lo + 1), hi - 1)
    compiles += 1
    ok, used = fits(guess * granule)
    if ok:
      lo, lo_total = guess, used
    else:
      hi, hi_total = guess, used
    use_line = hi - lo <= 0.75 * width
  return lo * granule, hi * granule, compiles


@dataclasses.dataclass
class Plan:
  """A config's steps compiled for a topology; `markdown()` is what `cnnjax plan` prints."""

  config_name: str
  topology: Topology
  device_kind: str
  global_batch: int
  eval_batch: int
  state_bytes: dict[str, int]  # "params", "optimizer", "batch_stats": per chip.
  input_bytes: int  # The train batch's shard of one chip.
  train: StepCost
  eval: StepCost | None
  largest_batch: int | None = None  # Per chip, when the train step does not fit.
  failing_batch: int = 0  # The smallest per-chip batch the search found not to fit.
  search_compiles: int = 0
  granule: int = 1  # Batches the search tried are multiples of it.
  knobs: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  @property
  def fits(self) -> bool:
    return self.train.fits(self.topology.chip)

  def markdown(self) -> str:
    """One markdown table (train and, if compiled, eval step side by side), then notes."""
    chip, n = self.topology.chip, self.topology.num_chips
    steps = [self.train] + ([self.eval] if self.eval else [])
    state = sum(self.state_bytes.values())
    parts = ", ".join(f"{name} {_bytes(size)}" for name, size in self.state_bytes.items() if size)
    rows: list[list[str]] = []

    def row(label: str, value: Callable[[StepCost], str] | str) -> None:
      rows.append(
        [label, *(value(cost) for cost in steps)]
        if callable(value)
        else [label, value, *[""] * (len(steps) - 1)]
      )

    row("chips", f"{n} x {self.device_kind} ({self.topology.name})")
    row(
      "global / per-chip batch", lambda cost: f"{cost.per_chip_batch * n} / {cost.per_chip_batch}"
    )
    row("parameters + optimizer state per chip", f"{_bytes(state)} ({parts})")
    row("input batch per chip", _bytes(self.input_bytes))
    row("activations and temporaries per chip", lambda cost: _bytes(cost.temp_bytes))
    row(
      "compiled program per chip",
      lambda cost: "n/a" if cost.out_of_memory else _bytes(cost.code_bytes),
    )
    row(
      f"total per chip, of {_bytes(chip.hbm_bytes)} HBM",
      lambda cost: (
        f"more than {_bytes(cost.temp_bytes)}: {cost.out_of_memory}"
        if cost.out_of_memory
        else f"{_bytes(cost.total_bytes)} ({100 * cost.total_bytes / chip.hbm_bytes:.1f}%)"
      ),
    )
    row("fits", lambda cost: "yes" if cost.fits(chip) else "**no**")
    row("FLOPs per step per chip", lambda cost: _count(cost.flops, "FLOP"))
    row("HBM bytes per step per chip", lambda cost: _count(cost.bytes_accessed, "B"))
    row(
      f"roofline images/s per chip ({chip.peak_flops / 1e12:g} TFLOP/s, "
      f"{chip.hbm_bandwidth / 1e9:,.0f} GB/s)",
      _roofline_text(chip),
    )
    row(
      "convolutions and matmuls (lowered)",
      lambda cost: ", ".join(f"{count} {name}" for name, count in cost.ops) or "none",
    )
    row("compile time", lambda cost: f"{cost.compile_seconds:.1f} s")
    if self.largest_batch is not None:
      exact = self.failing_batch - self.largest_batch <= self.granule
      row(
        "largest per-chip batch that fits",
        f"{self.largest_batch} (global {self.largest_batch * n}); "
        + ("" if exact else f"{self.failing_batch} does not; ")
        + f"{self.search_compiles} compiles"
        if self.largest_batch
        else "none",
      )
    if self.knobs:
      row("would help", "; ".join(self.knobs))
    header = ["", "train step"] + (["eval step"] if self.eval else [])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    title = (
      f"{self.config_name} on {self.topology.name}: compiled by XLA for "
      f"{n} {self.device_kind} chips (libtpu, compile-only), not run"
    )
    return "\n".join([title, "", *lines, *([""] + self.notes if self.notes else [])])


def _roofline_text(chip: Chip) -> Callable[[StepCost], str]:
  def text(cost: StepCost) -> str:
    rate, bound = roofline(cost, chip)
    return "n/a" if math.isnan(rate) else f"{rate:,.0f} ({bound} bound)"

  return text


def _bytes(size: float) -> str:
  if size >= GiB:
    return f"{size / GiB:.2f} GiB"
  if size >= MiB:
    return f"{size / MiB:.1f} MiB"
  return f"{size / 1024:.1f} KiB"


def _count(value: float, unit: str) -> str:
  if math.isnan(value):
    return "n/a"
  for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if value >= scale:
      return f"{value / scale:.3g} {prefix}{unit}"
  return f"{value:.3g} {unit}"


def batch_spec(
  features: Sequence[str],
  image_shape: tuple[int, int, int],
  max_objects: int,
  batch_size: int,
  sharding: jax.sharding.Sharding | None = None,
  valid: bool = False,
) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch the input pipeline yields, as ShapeDtypeStructs (no data is read).

  The shapes and dtypes are those of `cnnjax.data.adapters` (module docstring); `valid`
  adds the eval batches' mask.
  """
  h, w, c = image_shape
  known = {
    "image": ((h, w, c), np.uint8),
    "label": ((), np.int32),
    "mask": ((h, w), np.uint8),
    "boxes": ((max_objects, 4), np.float32),
    "box_labels": ((max_objects,), np.int32),
    "box_valid": ((max_objects,), np.bool_),
    "valid": ((), np.bool_),
  }
  names = (*features, "valid") if valid else tuple(features)
  missing = [name for name in names if name not in known]
  if missing:
    raise ValueError(
      f"cnnjax.train.plan.batch_spec does not know the features {missing}; add their shapes there."
    )
  return {
    name: jax.ShapeDtypeStruct((batch_size, *known[name][0]), known[name][1], sharding=sharding)
    for name in names
  }


def _max_objects(dataset: str, data_dir: str | None) -> int:
  """M, the padded box count of a detection dataset's batches (as `pipeline` pads them)."""
  import tensorflow_datasets as tfds
  from cnnjax.data import adapters
  from cnnjax.data import pipeline

  builder = tfds.builder(dataset, data_dir=pipeline.resolve_data_dir(data_dir))
  features = builder.info.features
  if "boxes" in features:  # cnnjax's shapes: stored padded.
    return int(features["boxes"].shape[0])
  return adapters.MAX_OBJECTS.get(builder.name, 0)


def _prepared(dataset: str, data_dir: str | None) -> bool:
  """Whether `dataset` can be read here (cnnjax's own builders prepare themselves)."""
  import tensorflow_datasets as tfds
  from cnnjax.data import builders
  from cnnjax.data import pipeline

  try:
    builder = tfds.builder(dataset, data_dir=pipeline.resolve_data_dir(data_dir))
  except Exception:  # noqa: BLE001 -- an unknown name: Experiment says what to do.
    return True
  return isinstance(builder, builders.BUILDERS) or builder.is_prepared()


def _experiment(
  config: ml_collections.ConfigDict, devices: list[jax.Device], notes: list[str]
) -> Any:
  """`Experiment` over `devices`; an unprepared dataset is described by its TFDS features."""
  from cnnjax.train import loop

  if _prepared(config.dataset, config.data_dir or None):
    return loop.Experiment(config, "", devices=devices)
  import tensorflow_datasets as tfds

  notes.append(
    f"{config.dataset} is not prepared here: its TFDS feature spec describes the "
    "batch (tfds.testing.mock_data); no example was read."
  )
  if not config.num_steps:
    # The split sizes are unknown; the schedule's length changes constants only.
    config.num_steps = 1
  with tfds.testing.mock_data(num_examples=4):
    return loop.Experiment(config, "", devices=devices)


def _state_bytes(state: Any) -> dict[str, int]:
  """Bytes per chip of the (replicated) train state, by part."""

  def size(tree: Any) -> int:
    return int(
      sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))
    )

  params, batch_stats = size(state.params), size(state.batch_stats)
  # The optimizer's state, with the plateau scale and the step counters (a few bytes).
  return {
    "params": params,
    "optimizer": size(state) - params - batch_stats,
    "batch_stats": batch_stats,
  }


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def out_of_memory_cost(
  message: str, per_chip_batch: int, compile_seconds: float, ops: tuple[tuple[str, int], ...] = ()
) -> StepCost | None:
  """The StepCost of a compile that XLA refused for want of HBM; None for other errors.

  The TPU compiler checks the program against the chip's HBM itself ("RESOURCE_EXHAUSTED:
  Ran out of memory on HBM, the total memory required for HLO temporaries (46.35G)
  exceeds available HBM (15.75G)"); the temporaries it names are kept.
  """
  if "RESOURCE_EXHAUSTED" not in message or "memory" not in message.lower():
    return None
  needed = re.search(r"required for HLO temporaries \(([\d.]+)([KMGT]?)", message)
  temp = int(float(needed.group(1)) * _UNITS[needed.group(2)]) if needed else 0
  first = message.strip().splitlines()[0]
  return StepCost(
    per_chip_batch,
    0,
    0,
    0,
    temp,
    0,
    float("nan"),
    float("nan"),
    compile_seconds,
    ops,
    out_of_memory=first[first.find("Ran out") :] or first,
  )


def _compile(step: Callable, args: tuple, per_chip_batch: int) -> StepCost:
  start = time.perf_counter()
  lowered = step.lower(*args)
  ops = op_census(lowered.as_text())
  try:
    compiled = lowered.compile()
  except Exception as error:  # noqa: BLE001 -- JaxRuntimeError; out of HBM is an answer.
    cost = out_of_memory_cost(str(error), per_chip_batch, time.perf_counter() - start, ops)
    if cost is None:
      raise
    return cost
  return step_cost(compiled, per_chip_batch, time.perf_counter() - start, ops)


def plan(
  config: ml_collections.ConfigDict,
  topology: str,
  config_name: str = "the config",
  evaluate: bool = True,
  search: bool = True,
  max_compiles: int = 6,
  log: Callable[[str], None] = lambda message: None,
) -> Plan:
  """Compiles `config`'s train step (and eval step) for `topology`; see the module docstring.

  Args:
    config: an experiment's ConfigDict (not changed).
    topology: a TPU slice name, e.g. "v5e:2x4".
    config_name: how the table's title names the config.
    evaluate: also compile the eval step.
    search: when the train step does not fit, find the largest per-chip batch that does.
    max_compiles: compiles the search for a fitting batch may make.
    log: called with a line before each compile (they can take minutes).
  Returns:
    The `Plan`.
  Raises:
    UsageError: a bad topology or config, a batch the chips do not divide, libtpu missing,
      or a step that fits the chip at no batch size.
  """
  from cnnjax.train import config as config_lib

  target = parse_topology(topology)
  config = copy.deepcopy(config)
  config_lib.validate(config)
  notes: list[str] = []
  if config.parallel != "shard_map":
    notes.append(
      f"config.parallel is {config.parallel!r}: compiled with shard_map, which "
      "runs the same per-device step."
    )
    config.parallel = "shard_map"
  check_batch(config.batch_size, target)
  if config.eval_batch_size:
    check_batch(config.eval_batch_size, target, "eval_batch_size")
  return compile_plan(
    config,
    target,
    topology_devices(target),
    config_name,
    evaluate,
    search,
    max_compiles,
    log,
    notes,
  )


def compile_plan(
  config: ml_collections.ConfigDict,
  target: Topology,
  devices: Sequence[jax.Device],
  config_name: str = "the config",
  evaluate: bool = True,
  search: bool = True,
  max_compiles: int = 6,
  log: Callable[[str], None] = lambda message: None,
  notes: list[str] | None = None,
) -> Plan:
  """`plan` for the given devices, one per chip of `target`: abstract TPU devices, or
  (tests) real ones, whose compiler then answers in place of the TPU's."""
  notes = [] if notes is None else notes
  devices = list(devices)
  experiment = _experiment(config, devices, notes)
  runner = experiment.runner
  replicated = jax.sharding.NamedSharding(runner.mesh, REPLICATED)
  sharded = jax.sharding.NamedSharding(runner.mesh, SHARDED)
  state = experiment.abstract_state()
  state_bytes = _state_bytes(state)
  _check_state_fits(state_bytes, target.chip, config_name)
  max_objects = (
    _max_objects(config.dataset, config.data_dir or None)
    if "boxes" in experiment.data.features
    else 0
  )
  train_step, eval_step = experiment.compile_steps()
  n = target.num_chips

  def batch(size: int, valid: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
    return batch_spec(
      experiment.data.features, experiment.data.image_shape, max_objects, size, sharded, valid
    )

  def compile_train(per_chip: int) -> StepCost:
    log(f"compiling the train step at per-chip batch {per_chip} for {target.name} ...")
    inputs = batch(per_chip * n)
    metrics = jax.eval_shape(train_step, state, None, inputs)[1]
    sums = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), metrics
    )
    return _compile(train_step, (state, sums, inputs), per_chip)

  train = compile_train(config.batch_size // n)
  input_bytes = (
    sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in batch(config.batch_size).values())
    // n
  )
  eval_cost = None
  eval_batch = config.eval_batch_size or config.batch_size
  if evaluate:
    log(f"compiling the eval step at per-chip batch {eval_batch // n} ...")
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    eval_cost = _compile(eval_step, (variables, batch(eval_batch, valid=True)), eval_batch // n)
  result = Plan(
    config_name=config_name,
    topology=target,
    device_kind=devices[0].device_kind,
    global_batch=config.batch_size,
    eval_batch=eval_batch,
    state_bytes=state_bytes,
    input_bytes=input_bytes,
    train=train,
    eval=eval_cost,
    notes=notes,
  )
  if not result.fits:
    _advise(result, config, experiment, compile_train, search, max_compiles)
  return result


def _check_state_fits(state_bytes: dict[str, int], chip: Chip, config_name: str) -> None:
  """UsageError when the train state and its gradients alone fill the chip (no compile)."""
  state = sum(state_bytes.values())
  if state + state_bytes["params"] >= chip.hbm_bytes:
    raise UsageError(
      f"{config_name} cannot fit a {chip.name} chip ({_bytes(chip.hbm_bytes)}) at any "
      f"batch: its parameters + optimizer state take {_bytes(state)} per chip and its "
      f"gradients {_bytes(state_bytes['params'])}; use a smaller model, an optimizer with "
      f"less state (sgd), or a chip with more HBM ({_more_hbm(chip)})."
    )


def _advise(
  result: Plan,
  config: ml_collections.ConfigDict,
  experiment: Any,
  compile_train: Callable[[int], StepCost],
  search: bool,
  max_compiles: int,
) -> None:
  """Fills `result.largest_batch` and `result.knobs` for a train step that does not fit."""
  chip, n = result.topology.chip, result.topology.num_chips
  state = sum(result.state_bytes.values())
  granule = 1
  if config.task == "metric_learning":
    granule = int(config.metric.examples_per_class)
  knobs = []
  if search:

    def fits(per_chip: int) -> tuple[bool, int]:
      cost = compile_train(per_chip)
      return cost.fits(chip), cost.total_bytes

    largest, failing, compiles = largest_fitting(
      fits,
      result.train.per_chip_batch,
      result.train.total_bytes,
      chip.hbm_bytes,
      granule,
      max_compiles,
    )
    if not largest:
      raise UsageError(
        f"{result.config_name} does not fit a {chip.name} chip ({_bytes(chip.hbm_bytes)}) "
        f"even at {granule} example(s) per chip; "
        + ("set --config.dtype=bfloat16, " if config.dtype == "float32" else "")
        + f"shrink config.input.size or the model, or use a chip with more HBM "
        f"({_more_hbm(chip)})."
      )
    result.largest_batch, result.failing_batch = largest, failing
    result.search_compiles, result.granule = compiles, granule
    knobs.append(f"a smaller batch: --config.batch_size={largest * n}")
  else:
    knobs.append("a smaller batch (rerun with the search to find the largest)")
  if config.dtype == "float32":
    knobs.append("bf16 activations: --config.dtype=bfloat16")
  model = experiment.task.model
  if hasattr(model, "memory_efficient") and not model.memory_efficient:
    knobs.append("remat: --config.model_kwargs.memory_efficient=True")
  elif result.train.temp_bytes > state:
    knobs.append(
      f"remat (activations are {_bytes(result.train.temp_bytes)}; "
      f"{config.model} has no remat option: nn.remat around its blocks would trade "
      "recomputation for them)"
    )
  result.knobs = knobs


def _more_hbm(chip: Chip) -> str:
  bigger = [c for c in CHIPS.values() if c.hbm_bytes > chip.hbm_bytes]
  return ", ".join(f"{c.name} {_bytes(c.hbm_bytes)}" for c in bigger) or "none is larger"
