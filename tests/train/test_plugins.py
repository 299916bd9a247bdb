"""A new task and a new evaluator plug in from one file, without touching the loop.

The toy task regresses the digit's value with LeNet-5's single output; its evaluator
reports the mean squared error. Both are registered here, in the test file, as a user
would in their own code.
"""

import json
import os

import jax.numpy as jnp
import pytest

from cnnjax import models
from cnnjax.errors import UsageError
from cnnjax.train import config as config_lib
from cnnjax.train import evaluators
from cnnjax.train import loop
from cnnjax.train import tasks
from cnnjax.train.tasks import inputs


class MeanSquaredError(evaluators.Evaluator):
  """Mean squared error of the predictions over the split."""

  requires = frozenset({"count", "squared_error"})
  metrics = ("mse", "count")

  def __call__(self, results):
    sums, _ = results[self.split]
    return {
      "mse": float(sums["squared_error"]) / float(sums["count"]),
      "count": float(sums["count"]),
    }


class DigitValue(tasks.Task):
  """Predicts the digit's value as a number."""

  produces = frozenset({"count", "squared_error"})

  @classmethod
  def default_evals(cls):
    return {"test": tasks.eval_config("toy_mse")}

  def create_model(self):
    return models.create(self.config.model, **self.backbone_kwargs(1))

  def preprocess(self, batch, rng, train):
    return inputs.prepare_batch(self, batch, rng, train)

  def loss_fn(self, params, batch_stats, batch, rng, train):
    variables = {"params": params, "batch_stats": batch_stats}
    outputs, new_batch_stats = self.apply(variables, batch["image"], train=train, rng=rng)
    loss = jnp.mean((outputs[:, 0] - batch["label"]) ** 2)
    return loss, ({"loss": loss}, new_batch_stats)

  def eval_step(self, variables, batch):
    outputs = self.model.apply(variables, batch["image"], train=False)
    valid = batch["valid"].astype(jnp.float32)
    errors = (outputs[:, 0] - batch["label"]) ** 2
    return {"count": valid.sum(), "squared_error": (errors * valid).sum()}, {}


tasks.register("toy_digit_value", DigitValue)
evaluators.register("toy_mse", MeanSquaredError)


def _config(**changes):
  config = config_lib.defaults("toy_digit_value")
  config.model = "lenet5"
  config.dataset = "digits"
  config.input.size = 32
  config.input.resize = 28
  config.batch_size = 32
  config.num_steps = 2
  config.log_every = 1
  config.async_checkpoints = False
  config.progress = "lines"
  config.best_metric = "test/mse"
  config.best_mode = "min"
  config.update_from_flattened_dict(changes)
  return config


@pytest.mark.slow
def test_a_task_and_an_evaluator_from_one_file_train_and_evaluate(tmp_path):
  config = _config(**{"evals.test.every": 1})
  summary = loop.run(config, str(tmp_path))
  assert summary["step"] == 2 and summary["test/count"] == 359 and summary["test/mse"] > 0
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [(r["step"], r["split"]) for r in records] == [
    (1, "train"),
    (1, "test"),
    (2, "train"),
    (2, "test"),
  ]


def test_a_kind_the_task_cannot_feed_names_those_it_can(tmp_path):
  config = _config(**{"evals.test.kind": "accuracy"})
  with pytest.raises(UsageError, match="choose one of toy_mse"):
    loop.run(config, str(tmp_path / "run"))
