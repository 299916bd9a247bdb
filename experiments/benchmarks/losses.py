"""Time and peak memory of loss + gradient versus batch size, printed as one markdown table.

Rows:
- `triplet_semihard_loss` (sort + reverse cumulative minimum, O(B^2) memory) against the
  straightforward B x B x B form of the same TensorFlow Addons semantics written below (it
  materialises, or at least iterates, every (anchor, positive, negative) triple, as TFA
  does), checked to give the same loss before timing.
- `nt_xent_loss` at each N: `method='dense'` (the full [2N, 2N] similarity matrix),
  `method='online'` (the blockwise form before issue 19: `block_size` columns at a time,
  running max, custom VJP recomputing blocks) and the default `method='auto'` (at
  t = 0.1 the constant-shift symmetric blockwise form, its default block size), with the
  speed-up of the last over the other two; the three losses are checked to agree.

Every configuration runs in a fresh subprocess, so its peak resident memory (ru_maxrss,
which includes the JAX runtime and the compiler, about 0.2-0.4 GB) is its own. The XLA
column is the compiled program's own need, from `compiled.memory_analysis()`: temporary
plus argument plus output buffers. A configuration whose XLA need exceeds `--max_gb` is
compiled but not run, and its row shows that need.

The machine's load average is printed before and after the table: on a shared machine,
compare rows of one run only.

  python experiments/benchmarks/losses.py [--quick] [--repeats=3] [--max_gb=10]
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.losses import nt_xent_loss
from cnnjax.losses import pairwise_distances
from cnnjax.losses import triplet_semihard_loss
import _script  # experiments/benchmarks/_script.py: absl flags with cnnjax's --help.

flags.DEFINE_bool("quick", False, "small sizes only (a smoke test)")
flags.DEFINE_integer("repeats", 3, "timed calls after a warm-up; the median counts")
flags.DEFINE_float("max_gb", 10.0, "do not run a configuration whose XLA buffers need more")
flags.DEFINE_string(
  "one",
  None,
  "internal: measure one KIND:SIZE in this process (the "
  "benchmark runs each configuration so, in a subprocess)",
)

DIM = 128
NUM_CLASSES_DIVISOR = 8  # Batches of B examples hold B / 8 classes of about 8 each.
NT_XENT_BLOCK = 1024
# kind: (row name, nt_xent_loss options); the last is the new default, compared to the others.
NT_XENT_KINDS = {
  "nt_xent_dense": ("nt_xent_loss dense", dict(method="dense")),
  "nt_xent_blockwise": (
    f"nt_xent_loss online blockwise ({NT_XENT_BLOCK} columns)",
    dict(method="online", block_size=NT_XENT_BLOCK),
  ),
  "nt_xent_shifted": ("nt_xent_loss default (constant-shift symmetric blocks)", {}),
}


def semihard_cubic(embeddings: jax.Array, labels: jax.Array, margin: float = 1.0) -> jax.Array:
  """Semi-hard triplet loss through a [B, B, B] mask, as TensorFlow Addons computes it."""
  distances = pairwise_distances(embeddings, embeddings)
  same = labels[:, None] == labels[None, :]
  positive = same & ~jnp.eye(labels.shape[0], dtype=bool)
  negative = ~same
  # farther[a, p, n]: n is a negative of a strictly farther from a than p.
  farther = negative[:, None, :] & (distances[:, None, :] > distances[:, :, None])
  nearest_farther = jnp.min(jnp.where(farther, distances[:, None, :], jnp.inf), axis=2)
  farthest = jnp.max(jnp.where(negative, distances, -jnp.inf), axis=1, keepdims=True)
  negative_distances = jnp.where(jnp.isfinite(nearest_farther), nearest_farther, farthest)
  valid = positive & jnp.any(negative, axis=1, keepdims=True)
  losses = jnp.where(valid, jax.nn.relu(distances - negative_distances + margin), 0.0)
  return jnp.sum(losses) / jnp.maximum(jnp.sum(valid), 1)


def _triplet_inputs(batch: int):
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(batch, DIM)).astype(np.float32)
  labels = rng.integers(0, max(batch // NUM_CLASSES_DIVISOR, 2), size=batch).astype(np.int32)
  return embeddings, labels


def _program(kind: str, size: int):
  """(jitted loss+grad function, its inputs) for one configuration."""
  if kind in ("semihard", "semihard_cubic"):
    embeddings, labels = _triplet_inputs(size)
    loss = triplet_semihard_loss if kind == "semihard" else semihard_cubic
    return jax.jit(jax.value_and_grad(lambda x: loss(x, labels))), (embeddings,)
  rng = np.random.default_rng(0)
  z1 = rng.normal(size=(size, DIM)).astype(np.float32)
  z2 = (z1 + rng.normal(size=z1.shape)).astype(np.float32)
  options = NT_XENT_KINDS[kind][1]
  return jax.jit(
    jax.value_and_grad(lambda a, b: nt_xent_loss(a, b, 0.1, **options), argnums=(0, 1))
  ), (z1, z2)


def measure(kind: str, size: int, repeats: int, max_gb: float) -> dict:
  """Runs in the subprocess: compile, check the need, time `repeats` calls after a warm-up."""
  fn, inputs = _program(kind, size)
  compiled = fn.lower(*inputs).compile()
  analysis = compiled.memory_analysis()
  xla_bytes = (
    analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
  )
  result = {"kind": kind, "size": size, "xla_gb": xla_bytes / 2**30}
  if xla_bytes > max_gb * 2**30:
    return result
  loss, _ = jax.block_until_ready(compiled(*inputs))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*inputs))
    times.append(time.perf_counter() - start)
  result.update(
    seconds=statistics.median(times),
    loss=float(loss),
    peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
  )
  return result


def _in_subprocess(kind: str, size: int, repeats: int, max_gb: float) -> dict:
  command = [
    sys.executable,
    __file__,
    "--one",
    f"{kind}:{size}",
    f"--repeats={repeats}",
    f"--max_gb={max_gb}",
  ]
  output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  return json.loads(output.strip().splitlines()[-1])


def _row(result: dict, name: str, note: str = "") -> str:
  if "seconds" in result:
    timing = f"{result['seconds']:.3f} | {result['peak_rss_gb']:.2f}"
  else:
    timing = "not run | not run"
  return f"| {name} | {result['size']} | {timing} | {result['xla_gb']:.2f} | {note} |"


def main() -> None:
  args = flags.FLAGS
  if args.one:
    kind, size = args.one.split(":")
    print(json.dumps(measure(kind, int(size), args.repeats, args.max_gb)))
    return

  if args.quick:
    triplet_sizes, cubic_sizes, nt_xent_sizes = [128, 256], [128, 256], [512]
  else:
    triplet_sizes = [256, 512, 1024, 2048, 4096]
    cubic_sizes = [256, 512, 1024]
    nt_xent_sizes = [1024, 4096, 16384]
  print(
    f"jax {jax.__version__}, backend {jax.default_backend()}, "
    f"{jax.local_device_count()} device(s); D={DIM}, loss + gradient, median of "
    f"{args.repeats} after a warm-up; {_load()} before\n"
  )
  print(
    "| loss | B (triplet) or N pairs (NT-Xent) | time (s) | peak RSS (GB) "
    "| XLA buffers (GB) | note |"
  )
  print("| --- | ---: | ---: | ---: | ---: | --- |")
  semihard = {}
  for size in triplet_sizes:
    semihard[size] = _in_subprocess("semihard", size, args.repeats, args.max_gb)
    print(_row(semihard[size], "triplet_semihard_loss (sort)"), flush=True)
  for size in cubic_sizes:
    cubic = _in_subprocess("semihard_cubic", size, args.repeats, args.max_gb)
    note = ""
    if "seconds" in cubic and "seconds" in semihard.get(size, {}):
      if not np.isclose(cubic["loss"], semihard[size]["loss"], rtol=1e-5):
        raise AssertionError(
          f"B={size}: baseline loss {cubic['loss']} differs from {semihard[size]['loss']}"
        )
      note = f"same loss; sort version {cubic['seconds'] / semihard[size]['seconds']:.0f}x faster"
    print(_row(cubic, "B^3 baseline (TFA form)", note), flush=True)
  for size in nt_xent_sizes:
    results = {}
    for kind, (name, _) in NT_XENT_KINDS.items():
      results[kind] = _in_subprocess(kind, size, args.repeats, args.max_gb)
      print(_row(results[kind], name, _nt_xent_note(kind, results)), flush=True)
  print(f"\n{_load()} after")


def _load() -> str:
  return "load average {:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())


def _nt_xent_note(kind: str, results: dict) -> str:
  """For the last kind: its speed-up over the others, after checking that the losses agree."""
  if kind != list(NT_XENT_KINDS)[-1] or "seconds" not in results[kind]:
    return ""
  new = results[kind]
  speedups, differences = [], []
  for other, (name, _) in list(NT_XENT_KINDS.items())[:-1]:
    if "seconds" not in results[other]:
      continue
    difference = abs(new["loss"] - results[other]["loss"]) / abs(results[other]["loss"])
    if difference > 1e-5:
      raise AssertionError(f"N={new['size']}: loss {new['loss']} differs from {name}'s")
    differences.append(difference)
    speedups.append(f"{results[other]['seconds'] / new['seconds']:.2f}x {name.split()[1]}")
  if not speedups:
    return ""
  return f"{', '.join(speedups)}; losses within {max(differences):.0e}"


if __name__ == "__main__":
  _script.run(main)
