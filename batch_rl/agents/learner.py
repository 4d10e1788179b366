"""What every value-based agent shares: the state pytree, the optimizer factory, and
the pure update fused over K sampled minibatches.

An agent supplies `loss(params, target_params, batch, key) -> (loss, metrics)`; this
module turns it into `train_steps(state, data, totals) -> (state, totals)`, one jit call
that samples and updates K times (lax.scan, sampling inside) and sums the metrics on the
device, so the host syncs once per iteration, not once per step.
"""
from typing import Any, Callable, Optional

import flax
import gin
import jax
import jax.numpy as jnp
import optax

from batch_rl import validation

Metrics = dict[str, jax.Array]
# Fraction of an iteration's gradient steps whose loss was not finite.
NON_FINITE = "Train/NonFinite"
LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, Metrics]]
SampleFn = Callable[[jax.Array, Any], Any]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; one pytree, checkpointed whole.

  Attributes:
    params: online network parameters.
    target_params: target network parameters (a copy of params at init).
    opt_state: optax state.
    rng: PRNG key (uint32 [2]) for sampling and stochastic losses.
    step: int32 scalar, gradient steps taken so far.
  """

  params: Any
  target_params: Any
  opt_state: Any
  rng: jax.Array
  step: jax.Array


def init_train_state(params: Any, optimizer: optax.GradientTransformation,
                     rng: jax.Array) -> TrainState:
  """The target starts as an exact copy of the online parameters."""
  return TrainState(params=params, target_params=jax.tree.map(jnp.copy, params),
                    opt_state=optimizer.init(params), rng=rng,
                    step=jnp.zeros((), jnp.int32))


@gin.configurable
def create_optimizer(name: str = "adam", learning_rate: float = 5e-5, eps: float = 3.125e-4,
                     b1: float = 0.9, b2: float = 0.999, decay: float = 0.95,
                     centered: bool = False, max_grad_norm: Optional[float] = None,
                     sam_rho: Optional[float] = None) -> optax.GradientTransformation:
  """Optax optimizer by name, defaults of DQN (Adam) in batch_rl / Dopamine.

  Args:
    name: "adam", "rmsprop" or "sgd".
    learning_rate: step size (5e-5 for offline DQN (Adam), 2.5e-4 for C51).
    eps: epsilon of Adam (outside the square root; 3.125e-4 = 0.01 / 32, Dopamine's)
      and of RMSProp (inside it, as optax and TF1's RMSPropOptimizer).
    b1, b2: Adam moment decays.
    decay, centered: RMSProp settings.
    max_grad_norm: clip gradients by global norm first, if set.
    sam_rho: if set, sharpness-aware minimisation (Foret et al. 2021; the empirical
      study's SAM) around the optimizer above: each step first moves the parameters
      to w + rho * g / ||g||, takes the gradient there, and applies it at w with the
      optimizer. optax.contrib.sam in opaque mode (2 gradients per step); the train
      step hands it the loss's gradient function.
  """
  validation.check_positive("create_optimizer.learning_rate", learning_rate)
  if name in ("adam", "rmsprop"):
    validation.check_positive("create_optimizer.eps", eps)
  if name == "adam":
    validation.check_in_range("create_optimizer.b1", b1, 0.0, 1.0, high_open=True)
    validation.check_in_range("create_optimizer.b2", b2, 0.0, 1.0, high_open=True)
  if name == "rmsprop":
    validation.check_in_range("create_optimizer.decay", decay, 0.0, 1.0, high_open=True)
  if max_grad_norm is not None:
    validation.check_positive("create_optimizer.max_grad_norm", max_grad_norm)
  if name == "adam":
    opt = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  elif name == "rmsprop":
    opt = optax.rmsprop(learning_rate, decay=decay, eps=eps, centered=centered)
  elif name == "sgd":
    opt = optax.sgd(learning_rate)
  else:
    raise validation.ConfigError(f"Unknown optimizer `create_optimizer.name` = {name!r}; "
                                 "expected 'adam', 'rmsprop' or 'sgd'.")
  if max_grad_norm is not None:
    opt = optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)
  if sam_rho is not None:
    validation.check_positive("create_optimizer.sam_rho", sam_rho)
    # optax.sgd(rho) steps by -rho * g; sam() negates adversarial updates, so the
    # perturbation is +rho * g / ||g|| (ascent), as in Foret et al.
    adversary = optax.chain(optax.contrib.normalize(), optax.sgd(sam_rho))
    opt = optax.contrib.sam(opt, adversary, sync_period=2, opaque_mode=True)
  return opt


def update_target(params: Any, target_params: Any, step: jax.Array, period: int,
                  tau: Optional[float] = None) -> Any:
  """The target after gradient step `step`: after every `period`-th step, a copy of
  the online parameters (tau None: DQN) or the Polyak average (1 - tau) target + tau
  online (SAC); unchanged otherwise. No host branch."""
  new_target = params if tau is None else optax.incremental_update(params, target_params,
                                                                   tau)
  return optax.periodic_update(new_target, target_params, step, period)


def make_update(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                target_update_period: int, target_update_tau: Optional[float] = None):
  """Pure `(state, batch, loss_key, rng) -> (state, metrics)`: one gradient step on a
  given batch, then the target sync; `rng` becomes the new state's key.

  The target network is updated after every `target_update_period`-th gradient step
  (`update_target`: a copy, or with `target_update_tau` a Polyak average).
  `with_per_sample=True` also returns the per-sample losses of a prioritized batch
  (see make_train_step).
  """

  def update(state: TrainState, batch: Any, loss_key: jax.Array, rng: jax.Array,
             with_per_sample: bool = False):
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if with_per_sample:
      def loss_of_weights(params, weight):
        return loss_fn(params, state.target_params, batch._replace(weight=weight), loss_key)

      (loss, metrics), (grads, weight_grads) = jax.value_and_grad(
          loss_of_weights, argnums=(0, 1), has_aux=True)(state.params, batch.weight)
      per_sample = weight_grads * batch.weight.shape[0]
    else:
      (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params, state.target_params, batch, loss_key)
    # 1 where this step's loss is NaN or infinite (runners stop the run on it).
    metrics = {**metrics, NON_FINITE: (~jnp.isfinite(loss)).astype(jnp.float32)}
    if isinstance(optimizer, optax.GradientTransformationExtraArgs):
      # Optimizers that re-evaluate the gradient (SAM) get the same loss on the same
      # batch and key; others ignore the extra argument.
      loss_grad = lambda params, _: grad_fn(params, state.target_params, batch, loss_key)[0]
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params,
                                            grad_fn=loss_grad)
    else:
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    target_params = update_target(params, state.target_params, step, target_update_period,
                                  target_update_tau)
    new_state = TrainState(params, target_params, opt_state, rng, step)
    if with_per_sample:
      return new_state, metrics, per_sample
    return new_state, metrics

  return update


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    sample_fn: SampleFn, target_update_period: int,
                    update_priorities: Optional[Callable] = None,
                    target_update_tau: Optional[float] = None):
  """Pure `(state, data) -> (state, data, metrics)`: sample, one gradient step, target
  sync.

  With `update_priorities` (prioritized replay), the batch carries importance weights
  that the loss applies (`weighted_mean`), and afterwards
  `data = update_priorities(data, batch.index, per_sample_loss)`. The per-sample losses
  are the gradient of the loss with respect to those weights, times the batch size
  (d mean(w * l) / d w_i = l_i / B), so losses need not return them.
  `target_update_tau`: as make_update.
  """
  update = make_update(loss_fn, optimizer, target_update_period, target_update_tau)

  def train_step(state: TrainState, data: Any):
    rng, sample_key, loss_key = jax.random.split(state.rng, 3)
    batch = sample_fn(sample_key, data)
    if update_priorities is None:
      state, metrics = update(state, batch, loss_key, rng)
      return state, data, metrics
    state, metrics, per_sample = update(state, batch, loss_key, rng, with_per_sample=True)
    return state, update_priorities(data, batch.index, per_sample), metrics

  return train_step


def make_tandem_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                           sample_fn: SampleFn, target_update_period: int,
                           train_active: bool = True,
                           target_update_tau: Optional[float] = None):
  """Pure `((active, passive), data) -> ((active, passive), data, metrics)` for tandem
  RL (Ostrovski et al. 2021): both agents take a gradient step on the SAME minibatch,
  drawn with the active agent's key, so the active agent's trajectory is exactly that
  of a solo run. The passive agent's metrics are prefixed with "Passive/".
  `train_active=False` (forked tandem after the fork) freezes the active agent's
  parameters; only its key advances, so the batches are drawn as before."""
  update = make_update(loss_fn, optimizer, target_update_period, target_update_tau)

  def train_step(states, data):
    active, passive = states
    rng, sample_key, loss_key = jax.random.split(active.rng, 3)
    batch = sample_fn(sample_key, data)
    if train_active:
      active, metrics = update(active, batch, loss_key, rng)
    else:
      active, metrics = active.replace(rng=rng), {}
    passive, passive_metrics = update(passive, batch, jax.random.fold_in(loss_key, 1),
                                      passive.rng)
    metrics.update({"Passive/" + k: v for k, v in passive_metrics.items()})
    return (active, passive), data, metrics

  return train_step


def weighted_mean(per_sample: jax.Array, batch) -> jax.Array:
  """mean(per_sample), or mean(weight * per_sample) for a prioritized batch (one with
  importance weights `batch.weight`)."""
  weight = getattr(batch, "weight", None)
  if weight is None:
    return jnp.mean(per_sample)
  return jnp.mean(weight * per_sample)


def make_train_steps(train_step, num_steps: int, unroll: int = 1, donate: bool = False,
                     vmap: Callable = lambda fn, in_axes: fn):
  """One jitted call running `num_steps` train steps with lax.scan.

  Returns `train_steps(state, data, totals) -> (state, totals)` where `totals` is a dict
  of float32 scalars (same keys as the step's metrics) to which the sum over the
  `num_steps` steps is added. `unroll` is lax.scan's unroll: on XLA's CPU backend a
  rolled scan over a conv-net update is several times slower than separate calls, so
  the Runner picks K (and unroll) per backend (see benchmarks/throughput.py);
  num_steps == 1 calls the step without a scan. `vmap` wraps the call before jit
  (`seed_axis.SeedAxis.vmap`: states and totals stacked per seed, the data shared).
  """

  def train_steps(state, data, totals):
    if num_steps == 1:
      # Even a length-1 scan is slower than a plain call on XLA:CPU.
      state, _, metrics = train_step(state, data)
      return state, {k: totals[k] + v for k, v in metrics.items()}

    def body(carry, _):
      carry, _, metrics = train_step(carry, data)
      return carry, metrics

    state, metrics = jax.lax.scan(body, state, None, length=num_steps, unroll=unroll)
    totals = {k: totals[k] + jnp.sum(v, axis=0) for k, v in metrics.items()}
    return state, totals

  return jax.jit(vmap(train_steps, (0, None, 0)), donate_argnums=(0, 2) if donate else ())


def zero_metrics(train_step, state: TrainState, data: Any) -> Metrics:
  """Zeros shaped like one step's metrics (traced abstractly, nothing runs)."""
  _, _, shapes = jax.eval_shape(train_step, state, data)
  return {k: jnp.zeros(v.shape, jnp.float32) for k, v in shapes.items()}
