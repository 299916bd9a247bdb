"""Train-step throughput (images/s) of LeNet-5, ResNet-18 and ResNet-50, JAX and PyTorch.

Times cnnjax's own train step (on-device preprocessing, forward, backward, pmean, SGD
update, donated buffers) through `cnnjax.train.parallel` on all local devices, and the
same step in PyTorch (torchvision models, SGD momentum, cross-entropy) when torch is
installed. Prints one markdown table.

    python experiments/benchmarks/train_throughput.py --batch_size=32 --steps=10
"""

import platform
import time

from absl import flags
import jax
import numpy as np

from cnnjax.train import config as config_lib
from cnnjax.train import tasks
import _train_step  # experiments/benchmarks/_train_step.py: the trainer's step.
import _script  # experiments/benchmarks/_script.py: absl flags with cnnjax's --help.

flags.DEFINE_string("models", "lenet5,resnet18,resnet50", "comma-separated names of MODELS")
flags.DEFINE_integer("batch_size", 32, "global batch size")
flags.DEFINE_integer("steps", 10, "timed steps")
flags.DEFINE_integer("warmup", 2, "steps before the timed ones")
flags.DEFINE_string("dtype", "float32", "JAX compute dtype (bfloat16 on TPU/GPU)")
flags.DEFINE_bool("no_torch", False, "skip the PyTorch column")

# name: (cnnjax model, input (H, W, C), classes)
MODELS = {
  "lenet5": ("lenet5", (32, 32, 1), 10),
  "resnet18": ("resnet18", (32, 32, 3), 10),
  "resnet50": ("resnet50", (224, 224, 3), 1000),
}


def jax_images_per_second(name: str, batch_size: int, steps: int, warmup: int, dtype: str) -> float:
  """Images/s of the cnnjax train step on all devices, after `warmup` steps."""
  model, shape, num_classes = MODELS[name]
  config = config_lib.defaults("classification")
  config.model, config.dataset, config.batch_size, config.dtype = (
    model,
    "synthetic",
    batch_size,
    dtype,
  )
  config.input.mean, config.input.std = (0.5,) * shape[2], (0.25,) * shape[2]
  config.schedule.name = "constant"
  task = tasks.create(config, tasks.DataInfo(num_classes, shape, {}))
  step, state, runner = _train_step.compiled_step(config, task, steps + warmup)
  local_batch = runner.check_batch_size(batch_size)
  rng = np.random.default_rng(0)
  batch = runner.shard_batch(
    {
      "image": rng.integers(0, 256, (local_batch, *shape), dtype=np.uint8),
      "label": rng.integers(0, num_classes, (local_batch,), dtype=np.int32),
    }
  )
  for _ in range(warmup):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  return batch_size * steps / (time.perf_counter() - start)


def torch_images_per_second(name: str, batch_size: int, steps: int, warmup: int) -> float | None:
  """Images/s of the same step in PyTorch, or None without torch."""
  try:
    import torch
    import torchvision
  except ImportError:
    return None
  _, (h, w, c), num_classes = MODELS[name]
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if name == "lenet5":
    net = torch.nn.Sequential(
      torch.nn.Conv2d(1, 6, 5),
      torch.nn.Tanh(),
      torch.nn.AvgPool2d(2),
      torch.nn.Conv2d(6, 16, 5),
      torch.nn.Tanh(),
      torch.nn.AvgPool2d(2),
      torch.nn.Flatten(),
      torch.nn.Linear(400, 120),
      torch.nn.Tanh(),
      torch.nn.Linear(120, 84),
      torch.nn.Tanh(),
      torch.nn.Linear(84, num_classes),
    )
  else:
    net = getattr(torchvision.models, name)(num_classes=num_classes)
  net = net.to(device).train()
  optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
  images = torch.randint(0, 256, (batch_size, c, h, w), dtype=torch.uint8, device=device)
  labels = torch.randint(0, num_classes, (batch_size,), device=device)

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net((images.float() / 255 - 0.5) / 0.25), labels)
    loss.backward()
    optimizer.step()

  for _ in range(warmup):
    step()
  if device == "cuda":
    torch.cuda.synchronize()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  if device == "cuda":
    torch.cuda.synchronize()
  return batch_size * steps / (time.perf_counter() - start)


def main() -> None:
  args = flags.FLAGS
  devices = jax.devices()
  print(
    f"devices: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
    f"host: {platform.processor() or platform.machine()}, batch {args.batch_size}, "
    f"{args.steps} timed steps after {args.warmup}\n"
  )
  print("| model | input | JAX img/s | PyTorch img/s |")
  print("| --- | --- | --- | --- |")
  for name in args.models.split(","):
    shape = "x".join(map(str, MODELS[name][1]))
    ours = jax_images_per_second(name, args.batch_size, args.steps, args.warmup, args.dtype)
    theirs = (
      None
      if args.no_torch
      else torch_images_per_second(name, args.batch_size, args.steps, args.warmup)
    )
    print(
      f"| {name} | {shape} | {ours:,.1f} | {'n/a' if theirs is None else f'{theirs:,.1f}'} |",
      flush=True,
    )


if __name__ == "__main__":
  _script.run(main)
