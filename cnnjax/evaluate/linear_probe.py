"""Linear probe: a softmax classifier trained on frozen features, the SimCLR evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def linear_probe_accuracy(
  train_features: np.ndarray,
  train_labels: np.ndarray,
  test_features: np.ndarray,
  test_labels: np.ndarray,
  num_classes: int,
  epochs: int = 100,
  batch_size: int = 256,
  learning_rate: float = 1e-2,
  weight_decay: float = 1e-4,
  seed: int = 0,
) -> float:
  """Test accuracy of a linear classifier fit to standardised train features.

  Args:
    train_features: [N, D]; train_labels: [N] ints.
    test_features: [M, D]; test_labels: [M] ints.
    num_classes: number of classes K.
    epochs, batch_size, learning_rate, weight_decay: AdamW on the cross-entropy.
  Returns:
    Top-1 accuracy on the test features.
  """
  mean = train_features.mean(0)
  std = train_features.std(0) + 1e-6
  x_train = jnp.asarray((train_features - mean) / std, jnp.float32)
  x_test = jnp.asarray((test_features - mean) / std, jnp.float32)
  y_train = jnp.asarray(train_labels, jnp.int32)
  params = {"w": jnp.zeros((x_train.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
  tx = optax.adamw(learning_rate, weight_decay=weight_decay)
  steps_per_epoch = max(1, -(-len(x_train) // batch_size))
  batch_size = min(batch_size, len(x_train))

  def loss_fn(params, x, y):
    logits = x @ params["w"] + params["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def epoch(carry, key):
    def step(carry, indices):
      params, opt_state = carry
      grads = jax.grad(loss_fn)(params, x_train[indices], y_train[indices])
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    order = jax.random.permutation(key, len(x_train))
    order = jnp.resize(order, (steps_per_epoch * batch_size,)).reshape(steps_per_epoch, -1)
    return jax.lax.scan(step, carry, order)[0], None

  keys = jax.random.split(jax.random.key(seed), epochs)
  (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)), keys)
  predictions = np.asarray(jnp.argmax(x_test @ params["w"] + params["b"], axis=1))
  return float(np.mean(predictions == np.asarray(test_labels)))
