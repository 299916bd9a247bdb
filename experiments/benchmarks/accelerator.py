"""cnnjax against PyTorch on whatever accelerator is present, side by side in one table.

Measures, in one run, on the default JAX backend (all its local devices):
- ResNet-50 train step at 224x224 in bfloat16, images/s at batch 64, 128 and 256: cnnjax's
  own step (on-device uint8 -> float preprocessing, forward, backward, pmean, SGD momentum,
  donated state, through `cnnjax.train.parallel`) against PyTorch AMP (bf16 autocast,
  channels_last), eager and under `torch.compile` (when it compiles offline);
- the same for ResNet-18 with the CIFAR stem at 32x32;
- the largest ResNet-50 batch that fits one device: cnnjax from XLA's memory analysis
  (the line through the measured batches, then compiled and run to confirm), PyTorch by
  doubling then bisecting until CUDA runs out of memory;
- semi-hard triplet loss + gradient (`cnnjax.losses.triplet_semihard_loss`) at B = 4096
  and 16384, and NT-Xent loss + gradient dense (`method="dense"`) against the default
  blockwise form (`block_size`) at 2N = 32k and 131k: time, and the memory XLA needs
  (not run where it exceeds the device);
- the input pipeline (`cnnjax.data.train_iterator` over 224x224 JPEGs written to a
  temporary TFDS dataset) against the ResNet-50 step, in images/s.

PyTorch runs first, in a subprocess, so that the two frameworks never share the device's
memory; its columns appear when torch is importable. Measurements run in that order
until `--budget_s` is spent; the rest are marked skipped. Prints one markdown table and
writes it to RESULTS_<device>.md beside this script (or to --out). Aimed at under 4
minutes on an H100-class GPU; `--tiny` runs tiny sizes (ResNet-18 for ResNet-50, 32x32
images, batches of 2) for a smoke test on CPU.

    python experiments/benchmarks/accelerator.py
    python experiments/benchmarks/accelerator.py --tiny --notorch_compile
"""

import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

# Before jax loads: the PyTorch subprocess runs first, and JAX then takes the device alone.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent

flags.DEFINE_bool("tiny", False, "tiny sizes for a CPU smoke test (overrides the sizes)")
flags.DEFINE_string("imagenet_model", "resnet50", "model of the 224x224 rows")
flags.DEFINE_integer("image_size", 224, "input side of the ImageNet-sized rows")
flags.DEFINE_string("batch_sizes", "64,128,256", "global batches of the ImageNet-sized rows")
flags.DEFINE_integer("cifar_batch", 256, "global batch of the ResNet-18 CIFAR row")
flags.DEFINE_string("triplet_sizes", "4096,16384", "batches B of the semi-hard triplet rows")
flags.DEFINE_string("nt_xent_sizes", "32768,131072", "2N (views) of the NT-Xent rows")
flags.DEFINE_integer("nt_xent_block", 1024, "block_size of blockwise NT-Xent")
flags.DEFINE_integer("steps", 10, "timed steps per train-step measurement")
flags.DEFINE_integer("warmup", 2, "steps before the timed ones")
flags.DEFINE_integer("pipeline_examples", 1024, "JPEGs in the input-pipeline dataset")
flags.DEFINE_integer("pipeline_batches", 8, "timed input-pipeline batches")
flags.DEFINE_integer("worker_count", 0, "Grain worker processes of the input pipeline")
flags.DEFINE_bool("torch", True, "add the PyTorch columns when torch is importable")
flags.DEFINE_bool("torch_compile", True, "also time PyTorch under torch.compile")
flags.DEFINE_bool("search", True, "find the largest batch that fits (accelerators only)")
flags.DEFINE_float("budget_s", 230.0, "measure until this many seconds have passed")
flags.DEFINE_string(
  "out", None, "where to write the table (default: RESULTS_<device>.md beside this script)"
)
flags.DEFINE_string(
  "torch_worker",
  None,
  "internal: run the PyTorch measurements of this JSON request and print them as JSON",
)

TINY = {
  "imagenet_model": "resnet18",
  "image_size": 32,
  "batch_sizes": "2",
  "cifar_batch": 2,
  "triplet_sizes": "64,128",
  "nt_xent_sizes": "128,256",
  "nt_xent_block": 32,
  "steps": 1,
  "warmup": 1,
  "pipeline_examples": 16,
  "pipeline_batches": 2,
}
NUM_CLASSES = 1000
EMBEDDING_DIM = 128
SKIPPED = "skipped (time budget)"


class Budget:
  """Seconds left of `--budget_s`, counted from the start of the run."""

  def __init__(self, seconds: float):
    self.start, self.seconds = time.perf_counter(), seconds

  def left(self) -> float:
    return self.seconds - (time.perf_counter() - self.start)


def _sizes(text: str) -> list[int]:
  return [int(value) for value in text.split(",") if value.strip()]


def _rate(value: float) -> str:
  return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _short(error: BaseException) -> str:
  """A table cell for a failure: its kind and first line, out-of-memory said plainly."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
    return "out of memory"
  return f"error: {type(error).__name__}: {text[:80]}"


# ---------------------------------------------------------------- PyTorch (subprocess) ---


def _torch_net(torch: Any, torchvision: Any, model: str, cifar: bool) -> Any:
  net = getattr(torchvision.models, model)(num_classes=10 if cifar else NUM_CLASSES)
  if cifar:  # cnnjax's stem="cifar": a 3x3/1 conv and no max pool.
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
  return net


def _torch_rate(
  torch: Any,
  net: Any,
  batch: int,
  size: int,
  classes: int,
  device: str,
  steps: int,
  warmup: int,
  compiled: bool,
) -> float:
  """Images/s of an AMP (bf16 autocast), channels_last SGD-momentum train step."""
  net = net.to(device, memory_format=torch.channels_last).train()
  forward = torch.compile(net) if compiled else net
  optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
  images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
  labels = torch.randint(0, classes, (batch,), device=device)

  def step():
    optimizer.zero_grad(set_to_none=True)
    x = ((images.float() / 255 - 0.5) / 0.25).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
      loss = torch.nn.functional.cross_entropy(forward(x), labels)
    loss.backward()
    optimizer.step()

  def sync():
    if device == "cuda":
      torch.cuda.synchronize()

  for _ in range(warmup):
    step()
  sync()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  sync()
  return batch * steps / (time.perf_counter() - start)


def _torch_largest(
  torch: Any, torchvision: Any, model: str, size: int, start: int, budget: Budget
) -> str:
  """The largest batch whose eager AMP step runs on the CUDA device: doubling, bisection."""

  def runs(batch: int) -> bool:
    try:
      net = _torch_net(torch, torchvision, model, cifar=False)
      _torch_rate(torch, net, batch, size, NUM_CLASSES, "cuda", 0, 1, compiled=False)
      return True
    except torch.cuda.OutOfMemoryError:
      return False
    finally:
      torch.cuda.empty_cache()

  lo, hi = 0, start
  while budget.left() > 0 and runs(hi):
    lo, hi = hi, hi * 2
  if not lo:
    return "out of memory" if budget.left() > 0 else SKIPPED
  while hi - lo > 8 and budget.left() > 0:
    middle = (lo + hi) // 2 // 8 * 8
    lo, hi = (middle, hi) if runs(middle) else (lo, middle)
  return f"{lo:,}" + ("" if hi - lo <= 8 else f" (at least; {budget.left():.0f} s left)")


def torch_worker(request: dict[str, Any]) -> dict[str, Any]:
  """The PyTorch measurements of `request` (built in `main`), JSON-serialisable.

  In order, while its budget lasts: every row eager, the largest batch (CUDA only), then
  every row under torch.compile (whose compiles take longest).
  """
  import torch
  import torchvision

  budget = Budget(request["budget_s"])
  device = "cuda" if torch.cuda.is_available() else "cpu"
  rates: dict[str, dict[str, str]] = {
    f"{row['name']}@{row['batch']}": {} for row in request["rows"]
  }
  result: dict[str, Any] = {"version": torch.__version__, "device": device, "rates": rates}

  def measure(compiled: bool) -> None:
    label = "compile" if compiled else "eager"
    for row in request["rows"]:
      cells = rates[f"{row['name']}@{row['batch']}"]
      if budget.left() <= 0:
        cells[label] = SKIPPED
        continue
      try:
        net = _torch_net(torch, torchvision, row["model"], row["cifar"])
        cells[label] = _rate(
          _torch_rate(
            torch,
            net,
            row["batch"],
            row["size"],
            row["classes"],
            device,
            request["steps"],
            request["warmup"],
            compiled,
          )
        )
      except Exception as error:  # noqa: BLE001 -- one cell of the table, not the run.
        cells[label] = _short(error)
      finally:
        if device == "cuda":
          torch.cuda.empty_cache()

  measure(compiled=False)
  if request["search"] and device == "cuda":
    result["largest"] = _torch_largest(
      torch,
      torchvision,
      request["largest_model"],
      request["largest_size"],
      request["largest_start"],
      budget,
    )
  else:
    result["largest"] = f"n/a on {device}"
  if request["compile"]:
    measure(compiled=True)
  return result


def run_torch(request: dict[str, Any]) -> dict[str, Any] | str:
  """`torch_worker(request)` in a fresh process; its result, or why there is none."""
  command = [sys.executable, __file__, f"--torch_worker={json.dumps(request)}"]
  try:
    done = subprocess.run(
      command, capture_output=True, text=True, timeout=request["budget_s"] + 120
    )
  except subprocess.TimeoutExpired:
    return "PyTorch timed out"
  if done.returncode:
    lines = done.stderr.strip().splitlines()
    return f"PyTorch failed: {lines[-1] if lines else done.returncode}"
  return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ JAX ---


def jax_train_step(
  model: str,
  size: int,
  batch: int,
  classes: int,
  dtype: str,
  model_kwargs: dict[str, Any] | None = None,
) -> tuple[Callable, Any, Any]:
  """(cnnjax's compiled train step, replicated state, sharded uint8 batch) at `batch`."""
  from cnnjax.train import config as config_lib
  from cnnjax.train import tasks
  import _train_step  # experiments/benchmarks/_train_step.py: the trainer's step.

  config = config_lib.defaults("classification")
  config.model, config.dataset, config.batch_size, config.dtype = model, "synthetic", batch, dtype
  config.model_kwargs = model_kwargs or {}
  config.input.mean, config.input.std = (0.5,) * 3, (0.25,) * 3
  config.schedule.name = "constant"
  task = tasks.create(config, tasks.DataInfo(classes, (size, size, 3), {}))
  step, state, runner = _train_step.compiled_step(config, task, 100)
  local_batch = runner.check_batch_size(batch)
  rng = np.random.default_rng(0)
  arrays = runner.shard_batch(
    {
      "image": rng.integers(0, 256, (local_batch, size, size, 3), dtype=np.uint8),
      "label": rng.integers(0, classes, (local_batch,), dtype=np.int32),
    }
  )
  return step.lower(state, arrays).compile(), state, arrays


def xla_need(compiled: Any) -> int:
  """Peak device bytes of a compiled program, per device (donated inputs counted once)."""
  memory = compiled.memory_analysis()
  return int(
    memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    - memory.alias_size_in_bytes
    + memory.temp_size_in_bytes
  )


def device_limit() -> int | None:
  """Bytes one device may allocate, when the backend says (GPU, TPU); None on CPU."""
  import jax

  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("bytes_limit")


def jax_rate(compiled: Any, state: Any, batch: Any, size: int, steps: int, warmup: int) -> float:
  """Images/s of `steps` calls of a compiled train step after `warmup` calls."""
  import jax

  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  return size * steps / (time.perf_counter() - start)


def jax_largest(
  model: str,
  size: int,
  measured: dict[int, int],
  limit: int,
  budget: Budget,
  num_devices: int,
  multiple: int = 8,
) -> str:
  """The largest per-device batch (a multiple of `multiple`) that fits one device.

  The line through the two largest measured needs (per-device batch -> bytes) gives a
  guess; it is compiled, shrunk while XLA's need exceeds `limit`, and run once to confirm.
  """
  import jax

  (b1, m1), (b2, m2) = sorted(measured.items())[-2:]
  per_example = (m2 - m1) / (b2 - b1)
  if per_example <= 0:
    return "n/a (memory did not grow with the batch)"
  guess = int((0.97 * limit - (m2 - per_example * b2)) / per_example) // multiple * multiple
  for _ in range(4):
    if budget.left() <= 0 or guess < multiple:
      return SKIPPED if budget.left() <= 0 else "n/a"
    try:
      compiled, state, batch = jax_train_step(
        model, size, guess * num_devices, NUM_CLASSES, "bfloat16"
      )
      need = xla_need(compiled)
      if need <= limit:
        jax.block_until_ready(compiled(state, batch))
        return f"{guess:,} per device (XLA needs {need / 2**30:.1f} of {limit / 2**30:.1f} GiB)"
      del compiled, state, batch
    except Exception as error:  # noqa: BLE001 -- out of memory at run time: shrink.
      if _short(error) != "out of memory":
        return _short(error)
    guess = int(guess * 0.92) // multiple * multiple
  return f"below {guess:,} per device"


def loss_row(
  kind: str, size: int, block: int, limit: int | None, budget: Budget
) -> tuple[str, str]:
  """(ms per loss + gradient, XLA's need) of one loss at one size."""
  import jax
  from cnnjax.losses import nt_xent_loss
  from cnnjax.losses import triplet_semihard_loss

  if budget.left() <= 0:
    return SKIPPED, ""
  rng = np.random.default_rng(0)
  if kind == "semihard":
    embeddings = rng.normal(size=(size, EMBEDDING_DIM)).astype(np.float32)
    labels = rng.integers(0, max(size // 8, 2), size=size).astype(np.int32)
    fn = jax.jit(jax.value_and_grad(lambda x: triplet_semihard_loss(x, labels)))
    inputs = (embeddings,)
  else:
    z1 = rng.normal(size=(size // 2, EMBEDDING_DIM)).astype(np.float32)
    z2 = (z1 + rng.normal(size=z1.shape)).astype(np.float32)
    # "blockwise" is the default constant-shift form at this block size.
    options = {"block_size": block} if kind == "blockwise" else {"method": "dense"}
    fn = jax.jit(
      jax.value_and_grad(lambda a, b: nt_xent_loss(a, b, 0.5, **options), argnums=(0, 1))
    )
    inputs = (z1, z2)
  try:
    compiled = fn.lower(*inputs).compile()
    need = xla_need(compiled)
    need_text = f"{need / 2**30:.2f} GiB"
    if limit is not None and need > limit:
      return f"does not fit ({limit / 2**30:.0f} GiB device)", need_text
    jax.block_until_ready(compiled(*inputs))
    times = []
    for _ in range(2):
      start = time.perf_counter()
      jax.block_until_ready(compiled(*inputs))
      times.append(time.perf_counter() - start)
    return f"{1e3 * min(times):,.1f} ms", need_text
  except Exception as error:  # noqa: BLE001 -- one cell of the table, not the run.
    return _short(error), ""


def pipeline_rate(size: int, examples: int, batch: int, batches: int, worker_count: int) -> float:
  """Images/s of `cnnjax.data.train_iterator` over `size`x`size` JPEGs, after 2 batches."""
  import PIL.Image
  import tensorflow_datasets as tfds
  from cnnjax import data

  class AcceleratorJpegs(tfds.core.GeneratorBasedBuilder):
    """Smooth random RGB JPEGs of one size (ImageNet's after its usual offline resize)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      rng = np.random.default_rng(0)
      for index in range(examples):
        coarse = rng.integers(0, 256, (max(size // 16, 2),) * 2 + (3,), dtype=np.uint8)
        image = PIL.Image.fromarray(coarse).resize((size, size), PIL.Image.BICUBIC)
        yield index, {"image": image, "label": int(rng.integers(0, NUM_CLASSES))}

  with tempfile.TemporaryDirectory() as data_dir:
    AcceleratorJpegs(data_dir=data_dir).download_and_prepare(file_format="array_record")
    iterator = data.train_iterator(
      "accelerator_jpegs",
      split="train",
      batch_size=batch,
      seed=0,
      data_dir=data_dir,
      worker_count=worker_count,
    )
    for _ in range(2):
      next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    return batch * batches / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- table ---


def device_slug(kind: str) -> str:
  """'NVIDIA H100 80GB HBM3' -> 'nvidia_h100_80gb_hbm3', for RESULTS_<device>.md."""
  return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or "device"


def markdown(rows: list[list[str]], torch_columns: bool) -> str:
  header = ["measurement", "size", "cnnjax", "XLA memory"]
  if torch_columns:
    header += ["PyTorch eager", "PyTorch torch.compile"]
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  for row in rows:
    row = row + [""] * (len(header) - len(row))
    lines.append("| " + " | ".join(row[: len(header)]) + " |")
  return "\n".join(lines)


def main() -> None:
  args = flags.FLAGS
  if args.torch_worker:
    print(json.dumps(torch_worker(json.loads(args.torch_worker))))
    return
  if args.tiny:
    for name, value in TINY.items():
      if not args[name].present:
        setattr(args, name, value)
  budget = Budget(args.budget_s)
  model, size = args.imagenet_model, args.image_size
  batches = _sizes(args.batch_sizes)
  model_name = {"resnet50": "ResNet-50", "resnet18": "ResNet-18"}.get(model, model)
  torch_rows = [
    {
      "name": "imagenet",
      "model": model,
      "cifar": False,
      "size": size,
      "classes": NUM_CLASSES,
      "batch": b,
    }
    for b in batches
  ]
  torch_rows.append(
    {
      "name": "cifar",
      "model": "resnet18",
      "cifar": True,
      "size": 32,
      "classes": 10,
      "batch": args.cifar_batch,
    }
  )
  torch_result: dict[str, Any] | str | None = None
  if args.torch and importlib_available("torch") and importlib_available("torchvision"):
    torch_result = run_torch(
      {
        "rows": torch_rows,
        "compile": args.torch_compile,
        "steps": args.steps,
        "warmup": args.warmup,
        "search": args.search and not args.tiny,
        "largest_model": model,
        "largest_size": size,
        "largest_start": max(batches),
        "budget_s": max(budget.left() * 0.45, 1.0),
      }
    )

  import jax  # After PyTorch has given the device back.

  devices = jax.local_devices()
  kind = devices[0].device_kind
  limit = device_limit()

  def torch_cells(key: str) -> list[str]:
    if torch_result is None:
      return []
    if isinstance(torch_result, str):
      return [torch_result, ""]
    cells = torch_result["rates"].get(key, {})
    return [
      cells.get("eager", ""),
      cells.get("compile", "not run" if not args.torch_compile else ""),
    ]

  rows: list[list[str]] = []
  measured_need: dict[int, int] = {}
  rates: dict[int, float] = {}
  for name, net, side, b, classes, kwargs in (
    *[("imagenet", model, size, b, NUM_CLASSES, None) for b in batches],
    ("cifar", "resnet18", 32, args.cifar_batch, 10, {"stem": "cifar"}),
  ):
    label = (
      f"{model_name} train step, bf16, {side}x{side}, images/s"
      if name == "imagenet"
      else "ResNet-18 CIFAR train step, bf16, 32x32, images/s"
    )
    if budget.left() <= 0:
      rows.append([label, f"batch {b}", SKIPPED, "", *torch_cells(f"{name}@{b}")])
      continue
    try:
      compiled, state, arrays = jax_train_step(net, side, b, classes, "bfloat16", kwargs)
      need = xla_need(compiled)
      rate = jax_rate(compiled, state, arrays, b, args.steps, args.warmup)
      if name == "imagenet":
        measured_need[b], rates[b] = need, rate
      cells = [_rate(rate), f"{need / 2**30:.2f} GiB"]
    except Exception as error:  # noqa: BLE001 -- one row of the table, not the run.
      cells = [_short(error), ""]
    rows.append([label, f"batch {b}", *cells, *torch_cells(f"{name}@{b}")])

  for kind_name, sizes, label in (
    ("semihard", _sizes(args.triplet_sizes), "semi-hard triplet loss + grad"),
    ("dense", _sizes(args.nt_xent_sizes), "NT-Xent loss + grad, dense"),
    (
      "blockwise",
      _sizes(args.nt_xent_sizes),
      f"NT-Xent loss + grad, blockwise ({args.nt_xent_block})",
    ),
  ):
    for n in sizes:
      rows.append(
        [
          label,
          f"{'B' if kind_name == 'semihard' else '2N'} = {n:,}",
          *loss_row(kind_name, n, args.nt_xent_block, limit, budget),
        ]
      )

  pipeline_batch = max(batches)
  label = f"input pipeline vs {model_name} step, {size}x{size} JPEG, images/s"
  if budget.left() <= 0:
    rows.append([label, f"batch {pipeline_batch}", SKIPPED])
  else:
    try:
      rate = pipeline_rate(
        size, args.pipeline_examples, pipeline_batch, args.pipeline_batches, args.worker_count
      )
      step = rates.get(pipeline_batch)
      versus = f"{_rate(rate)} vs {_rate(step)}" if step else _rate(rate)
      ratio = f" ({rate / step:.3g}x the step)" if step else ""
      rows.append([label, f"batch {pipeline_batch}, {os.cpu_count()} host cores", versus + ratio])
    except Exception as error:  # noqa: BLE001
      rows.append([label, f"batch {pipeline_batch}", _short(error)])

  label = f"largest {model_name} bf16 batch that fits one device"
  if not args.search or limit is None or len(measured_need) < 2:
    why = (
      "not searched"
      if not args.search
      else f"n/a on {jax.default_backend()}"
      if limit is None
      else "n/a (needs two measured batches)"
    )
    largest = why
  else:
    largest = jax_largest(
      model,
      size,
      {b // len(devices): need for b, need in measured_need.items()},
      limit,
      budget,
      len(devices),
    )
  torch_largest = (
    []
    if torch_result is None
    else [torch_result if isinstance(torch_result, str) else torch_result.get("largest", ""), ""]
  )
  rows.append([label, f"{size}x{size}", largest, "", *torch_largest])

  torch_text = (
    ""
    if torch_result is None
    else f", PyTorch {torch_result['version']} on {torch_result['device']}"
    if isinstance(torch_result, dict)
    else f", PyTorch: {torch_result}"
  )
  title = (
    f"{len(devices)} x {kind} ({jax.default_backend()}), jax {jax.__version__}"
    f"{torch_text}, host {platform.processor() or platform.machine()}; "
    f"{args.steps} timed steps after {args.warmup}; "
    f"{time.perf_counter() - budget.start:.0f} s in all"
  )
  table = markdown(rows, torch_result is not None)
  print(title + "\n\n" + table)
  out = pathlib.Path(args.out) if args.out else HERE / f"RESULTS_{device_slug(kind)}.md"
  command = "python experiments/benchmarks/accelerator.py " + " ".join(sys.argv[1:])
  out.write_text(
    f"# Accelerator benchmark: {kind}\n\n    {command.strip()}\n\n{title}\n\n{table}\n"
  )
  print(f"\nwritten to {out}")


def importlib_available(name: str) -> bool:
  import importlib.util

  return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
  sys.path.insert(0, str(HERE))
  import _script  # experiments/benchmarks/_script.py: absl flags with cnnjax's --help.

  _script.run(main)
