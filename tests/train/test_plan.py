"""`cnnjax plan`: topology and batch checks (no libtpu), the fitting-batch search, and the
demo's steps compiled for v5e:2x2 (with libtpu only: `pip install 'jax[tpu]'`)."""

import dataclasses
import importlib.util
import os
import pathlib

import jax
import jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from cnnjax import main
from cnnjax.data import adapters
from cnnjax.data import pipeline
from cnnjax.data.builders import shapes
from cnnjax.errors import UsageError
from cnnjax.train import plan
from cnnjax.train.tasks import detection

# Compile-only libtpu in several processes at once (pytest-xdist workers, a `cnnjax plan`
# beside the tests): libtpu otherwise holds /tmp/libtpu_lockfile for the first. Set before
# any test loads libtpu.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

REPO = pathlib.Path(__file__).resolve().parents[2]
LENET = REPO / "experiments" / "configs" / "lenet_digits.py"
needs_libtpu = pytest.mark.skipif(
  not plan.libtpu_available(),
  reason="libtpu is not installed: compiling for TPU needs pip install 'jax[tpu]' "
  "(e.g. python3 -m venv build/venv-tpu && build/venv-tpu/bin/pip install -e .[test] "
  "'jax[tpu]')",
)


def _error(capsys, argv: list[str]) -> str:
  """The one line `cnnjax ARGV...` prints on stderr, once it has exited with status 2."""
  with pytest.raises(SystemExit) as exit_info:
    main.run_cli(["cnnjax", *argv])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2, err
  assert len(err.strip().splitlines()) == 1, err
  return err.strip()


@pytest.mark.parametrize(
  "name,chips",
  [("v5e:2x4", 8), ("v5e:16x16", 256), ("v4:4x4x4", 64), ("v5p:2x2x1", 4), ("V6E:2x2", 4)],
)
def test_topology_names_give_the_chip_count(name, chips):
  topology = plan.parse_topology(name)
  assert topology.num_chips == chips
  assert topology.chip is plan.CHIPS[name.lower().split(":")[0]]


@pytest.mark.parametrize(
  "name,says",
  [
    ("v9:2x2", "unknown TPU generation 'v9' in --topology=v9:2x2; choose one of v4, v5e, v5p, v6e"),
    ("v5e", "--topology=v5e is not GENERATION:SHAPE"),
    ("v5e:2x2x1", "a v5e slice is AxB chips of 2 positive numbers, not 2x2x1"),
    ("v4:2x2", "a v4 slice is AxBxC chips of 3 positive numbers, not 2x2"),
    ("v5e:0x4", "a v5e slice is AxB chips"),
  ],
)
def test_bad_topology_names_are_usage_errors(name, says):
  with pytest.raises(UsageError, match="^" + says.replace("(", r"\(").replace(")", r"\)")):
    plan.parse_topology(name)


def test_command_line_rejects_an_unknown_topology_before_libtpu(capsys):
  err = _error(capsys, ["plan", f"--config={LENET}", "--topology=v9:2x2"])
  assert err.startswith("cnnjax: error: unknown TPU generation 'v9'")


def test_command_line_rejects_a_batch_the_chips_do_not_divide(capsys):
  err = _error(
    capsys, ["plan", f"--config={LENET}", "--topology=v5e:2x4", "--config.batch_size=100"]
  )
  assert err == (
    "cnnjax: error: batch_size 100 is not divisible by the 8 chips of v5e:2x4; "
    "use a multiple of 8, e.g. --config.batch_size=96 or 104."
  )


def test_command_line_needs_config_and_topology(capsys):
  assert "--topology is required" in _error(capsys, ["plan", f"--config={LENET}"])
  assert "--config=FILE is required" in _error(capsys, ["plan", "--topology=v5e:2x2"])


def test_check_batch_names_the_key_and_the_next_multiple():
  topology = plan.parse_topology("v5e:16x16")
  assert plan.check_batch(1024, topology) == 4
  with pytest.raises(
    UsageError,
    match=r"eval_batch_size 100 .* 256 chips .* "
    r"--config.eval_batch_size=256\.$",
  ):
    plan.check_batch(100, topology, "eval_batch_size")


@pytest.mark.skipif(plan.libtpu_available(), reason="libtpu is installed here")
def test_without_libtpu_the_plan_says_what_to_install(capsys):
  err = _error(capsys, ["plan", f"--config={LENET}", "--topology=v5e:2x2"])
  assert "libtpu, which is not installed; install it with pip install 'jax[tpu]'" in err


def _fake_fits(limit: int, fixed: int, per_example: int, calls: list[int]):
  def fits(batch: int) -> tuple[bool, int]:
    calls.append(batch)
    total = fixed + per_example * batch
    return total <= limit, total

  return fits


@pytest.mark.parametrize(
  "limit,fixed,per_example,granule,expected",
  [(1000, 100, 9, 1, 100), (1000, 100, 7, 4, 128), (1000, 100, 1000, 1, 0), (1000, 100, 3, 1, 300)],
)
def test_largest_fitting_batch_is_found_in_few_compiles(
  limit, fixed, per_example, granule, expected
):
  calls: list[int] = []
  failing = 512
  largest, smallest_failing, compiles = plan.largest_fitting(
    _fake_fits(limit, fixed, per_example, calls),
    failing,
    fixed + per_example * failing,
    limit,
    granule,
    max_compiles=6,
  )
  assert largest == expected and compiles == len(calls) <= 6
  assert smallest_failing == (expected or 0) + granule
  assert all(batch % granule == 0 for batch in calls)


def test_largest_fitting_stops_at_max_compiles_with_a_batch_that_fits():
  calls: list[int] = []

  # Memory that is not linear in the batch: the line's guesses fall short, bisection helps.
  def fits(batch):
    calls.append(batch)
    total = 100 + batch**2
    return total <= 10_100, total

  largest, smallest_failing, compiles = plan.largest_fitting(
    fits, 4096, 100 + 4096**2, 10_100, 1, 4
  )
  assert compiles == len(calls) == 4 and 0 < largest <= 100 < smallest_failing
  assert fits(largest)[0] and not fits(smallest_failing)[0]
  result = _plan_result(hbm=10_100, train_total=100 + 4096**2)
  result.largest_batch, result.failing_batch, result.search_compiles = largest, 2049, 4
  assert (
    f"| largest per-chip batch that fits | {largest} (global {4 * largest}); 2049 does "
    "not; 4 compiles |" in result.markdown()
  )


def _plan_result(hbm: int, train_total: int, dtype_fields=None) -> plan.Plan:
  chip = dataclasses.replace(plan.CHIPS["v5e"], hbm_bytes=hbm)
  topology = plan.Topology("v5e:2x2", chip, (2, 2))
  cost = plan.StepCost(64, 1000, 1000, 1000, train_total - 1000, 0, 1e9, 1e8, 1.0)
  return plan.Plan(
    "test",
    topology,
    "TPU v5 lite",
    256,
    256,
    {"params": 200, "optimizer": 400, "batch_stats": 0},
    10,
    cost,
    None,
  )


def test_advice_for_a_step_that_does_not_fit(monkeypatch):
  from cnnjax.train import config as config_lib

  config = config_lib.defaults()
  config.dtype = "float32"
  # Peak bytes 2000 + 150 x per-chip batch: 64 needs 11,600, 53 is the most that fits.
  result = _plan_result(hbm=10_000, train_total=2000 + 150 * 64)
  experiment = type("E", (), {"task": type("T", (), {"model": object()})()})()

  def compile_train(per_chip):
    return dataclasses.replace(
      result.train, per_chip_batch=per_chip, temp_bytes=1000 + 150 * per_chip
    )

  plan._advise(result, config, experiment, compile_train, search=True, max_compiles=8)
  assert result.largest_batch == 53 and result.search_compiles == 3
  markdown = result.markdown()
  assert "| largest per-chip batch that fits | 53 (global 212); 3 compiles |" in markdown
  assert "--config.batch_size=212" in markdown and "--config.dtype=bfloat16" in markdown
  assert "remat" in markdown


def test_advice_when_no_batch_fits():
  from cnnjax.train import config as config_lib

  config = config_lib.defaults()
  result = _plan_result(hbm=10_000, train_total=100_000)
  experiment = type("E", (), {"task": type("T", (), {"model": object()})()})()

  def compile_train(per_chip):
    return dataclasses.replace(result.train, per_chip_batch=per_chip, temp_bytes=20_000)

  with pytest.raises(UsageError, match="does not fit a v5e chip .* even at 1 example"):
    plan._advise(result, config, experiment, compile_train, search=True, max_compiles=8)


def test_a_state_larger_than_the_chip_cannot_fit_at_any_batch():
  with pytest.raises(
    UsageError,
    match=r"^big cannot fit a v5e chip \(16.00 GiB\) at any batch: "
    r"its parameters \+ optimizer state take 15.00 GiB",
  ):
    plan._check_state_fits(
      {"params": 5 * plan.GiB, "optimizer": 10 * plan.GiB, "batch_stats": 0},
      plan.CHIPS["v5e"],
      "big",
    )


def test_batch_spec_matches_the_pipeline_batches():
  # digits through the real pipeline; shapes' examples as its builder renders them.
  info = pipeline.dataset_info("digits")
  batch = next(iter(pipeline.train_iterator("digits", split="train", batch_size=4, seed=0)))
  spec = plan.batch_spec(info.features, info.image_shape, 0, 4)
  assert {k: (v.shape, v.dtype) for k, v in spec.items()} == {
    k: (np.shape(v), np.asarray(v).dtype) for k, v in batch.items()
  }
  example = adapters.Adapter(kind="shapes")(shapes.render(np.random.default_rng(0), 32, 4))
  spec = plan.batch_spec(adapters.SEGMENTATION_AND_DETECTION, (32, 32, 3), 4, 2, valid=True)
  assert {k: (v.shape[1:], v.dtype) for k, v in spec.items() if k != "valid"} == {
    k: (np.shape(v), np.asarray(v).dtype) for k, v in example.items()
  }
  assert spec["valid"].shape == (2,) and spec["valid"].dtype == np.bool_


@pytest.fixture(scope="module")
def lenet_v5e_2x2() -> plan.Plan:
  """The demo config's train and eval steps compiled for v5e:2x2 (about a minute here)."""
  if not plan.libtpu_available():
    pytest.skip(needs_libtpu.kwargs["reason"])
  spec = importlib.util.spec_from_file_location("lenet_digits", LENET)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return plan.plan(module.get_config(), "v5e:2x2", config_name="lenet_digits")


@pytest.mark.slow
@needs_libtpu
def test_demo_per_chip_memory_is_positive_and_below_the_chip_hbm(lenet_v5e_2x2):
  result = lenet_v5e_2x2
  hbm = plan.CHIPS["v5e"].hbm_bytes
  for cost in (result.train, result.eval):
    assert 0 < cost.total_bytes < hbm
    assert cost.flops > 0 and cost.bytes_accessed > 0 and cost.compile_seconds > 0
  assert result.train.argument_bytes >= sum(result.state_bytes.values()) > 0
  assert result.train.alias_bytes > 0  # The donated state is updated in place.
  assert result.fits and result.largest_batch is None and not result.knobs


@pytest.mark.slow
@needs_libtpu
def test_demo_plan_table(lenet_v5e_2x2):
  table = lenet_v5e_2x2.markdown()
  assert table.startswith(
    "lenet_digits on v5e:2x2: compiled by XLA for 4 TPU v5 lite chips "
    "(libtpu, compile-only), not run\n\n|  | train step | eval step |"
  )
  assert "| chips | 4 x TPU v5 lite (v5e:2x2) |" in table
  assert "| global / per-chip batch | 64 / 16 | 64 / 16 |" in table
  assert "| fits | yes | yes |" in table
  assert "| total per chip, of 16.00 GiB HBM |" in table


@needs_libtpu
def test_command_line_prints_the_plan(monkeypatch, capsys, lenet_v5e_2x2):
  calls = []

  def fake_plan(config, topology, **kwargs):
    calls.append((config.model, topology, kwargs["evaluate"], kwargs["max_compiles"]))
    return lenet_v5e_2x2

  monkeypatch.setattr(plan, "plan", fake_plan)
  assert (
    main.main(
      [
        "cnnjax",
        "plan",
        f"--config={LENET}",
        "--topology=v5e:2x2",
        "--noeval",
        "--max_compiles=3",
        "--config.batch_size=32",
      ]
    )
    == 0
  )
  assert calls == [("lenet5", "v5e:2x2", False, 3)]
  assert capsys.readouterr().out == lenet_v5e_2x2.markdown() + "\n"


def test_op_census_counts_convolutions_and_matmuls_by_dtype_and_precision():
  import jax
  import jax.numpy as jnp

  def f(x, w, a):
    y = jax.lax.conv_general_dilated(
      x.astype(jnp.bfloat16),
      w.astype(jnp.bfloat16),
      (1, 1),
      "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    z = jnp.matmul(a, a.T, precision=jax.lax.Precision.HIGHEST)
    return (
      y.sum()
      + z.sum()
      + (a @ a).sum()
      + jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
      ).sum()
    )

  text = (
    jax.jit(f).lower(jnp.zeros((1, 8, 8, 3)), jnp.zeros((3, 3, 3, 4)), jnp.zeros((4, 4))).as_text()
  )
  assert plan.op_census(text) == (
    ("convolution bf16", 1),
    ("convolution f32", 1),
    ("dot_general f32", 1),
    ("dot_general f32 HIGHEST", 1),
  )


def test_the_plan_of_the_demo_compiles_its_train_step_on_cpu_devices_without_libtpu():
  # The same path as for a TPU topology, with this machine's four CPU devices in place of
  # the chips: the figures are the CPU compiler's, the table and checks are the plan's.
  import jax

  spec = importlib.util.spec_from_file_location("lenet_digits", LENET)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.batch_size = 32
  result = plan.compile_plan(
    config, plan.parse_topology("v5e:2x2"), jax.devices()[:4], "lenet_digits", evaluate=True
  )
  assert result.train.per_chip_batch == 8 and result.eval.per_chip_batch == 8
  assert 0 < result.train.total_bytes < plan.CHIPS["v5e"].hbm_bytes and result.fits
  assert result.train.flops > 0 and result.eval.flops > 0
  params = result.state_bytes["params"]
  assert params == 4 * 61_706  # LeNet-5's parameters, float32.
  assert result.state_bytes["optimizer"] >= 2 * params  # AdamW's two moments.
  assert ("convolution f32", 5) in result.train.ops
  assert "| global / per-chip batch | 32 / 8 | 32 / 8 |" in result.markdown()


def test_a_compile_refused_for_want_of_hbm_is_a_step_that_does_not_fit():
  message = (
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
    "temporaries (46.35G) exceeds available HBM (15.75G).\nmore detail"
  )
  cost = plan.out_of_memory_cost(message, 65536, 12.0)
  assert cost.temp_bytes == int(46.35 * 2**30) and not cost.fits(plan.CHIPS["v5e"])
  assert cost.out_of_memory.startswith("Ran out of memory on HBM, the total memory")
  assert plan.out_of_memory_cost("INVALID_ARGUMENT: something else", 1, 1.0) is None
  result = _plan_result(hbm=16 * plan.GiB, train_total=1)
  result.train = cost
  table = result.markdown()
  assert "| fits | **no** |" in table and "| FLOPs per step per chip | n/a |" in table
  assert "| total per chip, of 16.00 GiB HBM | more than 46.35 GiB: Ran out of memory" in table


@needs_libtpu
@pytest.mark.parametrize("chips", [1, 4])
def test_selective_search_callback_lowers_for_tpu_under_shard_map(chips):
  # Two callback results of different ranks failed here with jax 0.10 ("'stablehlo.recv'
  # op result 0 - sharding doesn't match tensor rank"): fast_rcnn_voc's step did not lower.
  devices = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu").devices

  def step(images):
    boxes, valid = detection.selective_search_proposals(images, 300, (100.0,))
    return boxes.sum() + valid.sum()

  mesh = Mesh(np.asarray(devices[:chips]), ("batch",))
  sharded = jax.shard_map(step, mesh=mesh, in_specs=P("batch"), out_specs=P(), check_vma=False)
  lowered = jax.jit(sharded).lower(jax.ShapeDtypeStruct((4, 64, 64, 3), jnp.uint8))
  assert "stablehlo.recv" in lowered.as_text()  # The host transfer of the callback's result.
  assert lowered.compile().memory_analysis().temp_size_in_bytes >= 0
