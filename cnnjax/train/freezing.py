"""What training leaves unchanged: one object, made once, that every part reads.

`cnnjax.train.transfer.freezing` decides it from `config.transfer` and the parameters;
the optimizer gives frozen parameters zero updates (`optim.create_optimizer`), the train
step stops their gradients (so a frozen backbone runs forward only) and, when BatchNorm
statistics are frozen, runs the model in inference mode and keeps the statistics
(`state.make_train_step`).
"""

import dataclasses
from typing import Any

import jax

FROZEN, TRAINED = "frozen", "trained"


@dataclasses.dataclass(frozen=True)
class Freezing:
  """Which parameters and statistics training leaves as they are.

  Attributes:
    labels: a pytree like the parameters, FROZEN or TRAINED per leaf; None when every
      parameter trains.
    batch_stats: whether BatchNorm statistics stay as they are. Then the model also runs
      in inference mode in training (running statistics, no dropout), so a linear probe's
      head learns on exactly the features it is evaluated on.
  """

  labels: Any = None
  batch_stats: bool = False

  @property
  def freezes_parameters(self) -> bool:
    return self.labels is not None and FROZEN in jax.tree.leaves(self.labels)

  def stop_gradients(self, params: Any) -> Any:
    """`params` with the frozen ones behind `stop_gradient` (their gradient is never computed)."""
    if not self.freezes_parameters:
      return params
    return jax.tree.map(
      lambda p, label: jax.lax.stop_gradient(p) if label == FROZEN else p, params, self.labels
    )


NOTHING = Freezing()
