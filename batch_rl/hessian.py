"""The exact Hessian of an agent's loss over a whole dataset, and its eigenvalue spectrum.

The empirical study of implicit regularisation in offline RL (Gulcehre et al. 2022,
Figures 24-25) looks at the Hessian of the TD loss with respect to all parameters of a
small network, over the whole dataset, and at how its eigenvalues are distributed (with
ReLU most of them sit at zero). This module computes that matrix exactly:

  * the parameters are flattened into one vector theta of P entries (`flat_loss`);
  * the dataset is given as batches of transitions, each batch's loss being the mean
    over its transitions; the Hessian of each batch's loss is computed forward-over-
    reverse under jit (`batch_hessian`: `jax.hessian`, or the linearised gradient
    applied to blocks of basis vectors), and the batches' Hessians are
    summed weighted by their transition counts and divided by the total, which is the
    Hessian of the mean loss over all the transitions (`dataset_hessian`);
  * the spectrum is numpy's `eigvalsh` of the symmetrised matrix (`hessian_eigenvalues`)
    and a few numbers that summarise it (`spectrum_summary`).

The matrix has P * P entries (float32: 4 P^2 bytes), so `check_size` refuses networks
above a parameter limit before anything of that size is allocated.

For the project's agents, `td_loss_on_batch` is the loss the agent descends, as a
function of its online parameters with the target parameters held fixed (the
semi-gradient TD objective), and `dataset_indices` / `transition_batches` give every
valid transition of the offline data exactly once, in order, built by the sampler's
own `gather_transitions`.
"""
import copy
import functools
import time
from typing import Any, Callable, Iterable, Iterator, Optional

import jax
import jax.numpy as jnp
from jax import flatten_util
import numpy as np

from batch_rl.replay import sampler
from batch_rl.validation import ConfigError

# The default limit on P, the number of parameters: a float32 Hessian of 16,384
# parameters takes 1 GiB (its eigenvalues are computed on float64 copies, a few GiB more).
# A 1-hidden-layer 64-unit MLP on bsuite catch (50 inputs, 3 actions) has 3,459
# parameters and the study's 2 x 64 MLP 7,619; a 2 x 512 MLP (290,307) is refused.
DEFAULT_MAX_PARAMETERS = 16_384
# Eigenvalues with |lambda| <= DEFAULT_TOL * max |lambda| count as zero. Relative to the
# largest eigenvalue, so the count does not depend on the loss's scale; 1e-3 lies far
# above float32 rounding (2^-24 relative per operation, grown by sums over thousands of
# terms) and below curvature that matters next to the largest.
DEFAULT_TOL = 1e-3
# Hessian columns computed in one vectorised pass (batch_hessian): on CPU, blocks of a
# few dozen columns use the caches better than all P columns at once.
DEFAULT_COLUMNS_PER_PASS = 32
# Bytes per entry of the Hessian that check_size reports (float32).
_FLOAT32_BYTES = 4
_GIB = 2.0 ** 30


def flat_loss(loss_fn: Callable[[Any], jax.Array], params: Any
              ) -> tuple[Callable[[jax.Array], jax.Array], jax.Array, Callable[[jax.Array], Any]]:
  """The loss as a function of one flat parameter vector.

  Args:
    loss_fn: params (a pytree) -> scalar loss.
    params: the point; its leaves are flattened in `jax.flatten_util.ravel_pytree`'s
      order (the pytree's leaves in order, each row-major).

  Returns:
    (f, theta0, unravel): f(theta) = loss_fn(unravel(theta)) for a vector theta [P],
    theta0 = params flattened, and unravel mapping such a vector back to a pytree
    shaped like `params`.
  """
  theta0, unravel = flatten_util.ravel_pytree(params)
  return (lambda theta: loss_fn(unravel(theta))), theta0, unravel


def num_parameters(params: Any) -> int:
  """P: the number of scalar parameters in the pytree `params` (arrays, or shapes such
  as `jax.ShapeDtypeStruct` leaves)."""
  return int(sum(np.prod(np.shape(leaf), dtype=np.int64) for leaf in jax.tree.leaves(params)))


def estimate_bytes(num_parameters: int, itemsize: int = _FLOAT32_BYTES) -> int:
  """Bytes of a P x P Hessian of `num_parameters` = P entries of `itemsize` bytes
  (float32 by default: 4 P^2)."""
  return int(num_parameters) ** 2 * int(itemsize)


def check_size(num_parameters: int, max_parameters: int = DEFAULT_MAX_PARAMETERS,
               binding: str = "`max_parameters`") -> None:
  """ConfigError (one paragraph) when a network of `num_parameters` parameters is above
  `max_parameters`: the message gives both, the Hessian's size in bytes and GiB, and
  `binding`, the setting (a gin binding or a flag) that raises the limit."""
  num_parameters, max_parameters = int(num_parameters), int(max_parameters)
  if num_parameters <= max_parameters:
    return
  need = estimate_bytes(num_parameters)
  limit = estimate_bytes(max_parameters)
  raise ConfigError(
      f"The Hessian of a network of {num_parameters:,} parameters is a "
      f"{num_parameters:,} x {num_parameters:,} matrix of {need:,} bytes "
      f"({need / _GIB:.3g} GiB) in float32, and its eigenvalues are computed on float64 "
      f"copies of several times that; this is above the limit of {max_parameters:,} "
      f"parameters ({limit / _GIB:.3g} GiB). Use a smaller network, or raise the limit "
      f"with {binding} if the machine holds it (nothing was computed).")


def batch_count(batch: Any) -> int:
  """Transitions in a batch: the leading dimension of its first array (`state` of a
  `sampler.Transition`)."""
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError("A batch without arrays has no transitions to count.")
  return int(np.shape(leaves[0])[0])


def batch_hessian(f: Callable[[jax.Array], jax.Array], theta: jax.Array,
                  columns_per_pass: Optional[int] = DEFAULT_COLUMNS_PER_PASS) -> jax.Array:
  """The Hessian [P, P] of a scalar f at theta [P], forward-over-reverse (traceable).

  With `columns_per_pass` None this is `jax.hessian(f)(theta)`: one pass of the gradient's
  Jacobian-vector product vmapped over all P basis vectors. Otherwise the gradient is
  linearised once at theta (`jax.linearize`) and its linear map applied to the basis
  vectors `columns_per_pass` at a time (vmapped, in a `lax.map` over the blocks): the
  same matrix up to rounding, with the memory of the intermediate values bounded by the
  block instead of P, and faster on CPU (better cache use) for P in the thousands.
  """
  size = int(theta.shape[0])
  if columns_per_pass is not None and int(columns_per_pass) < 1:
    raise ValueError(f"columns_per_pass must be at least 1 or None, got {columns_per_pass}.")
  if columns_per_pass is None or int(columns_per_pass) >= size:
    return jax.hessian(f)(theta)
  block = int(columns_per_pass)
  _, linear = jax.linearize(jax.grad(f), theta)
  num_blocks = -(-size // block)

  def columns(first):  # H e_j for j = first, ..., first + block - 1 (zero past P)
    basis = jax.nn.one_hot(first + jnp.arange(block), size, dtype=theta.dtype)
    return jax.vmap(linear)(basis)

  stacked = jax.lax.map(columns, jnp.arange(num_blocks) * block)
  return stacked.reshape(num_blocks * block, size)[:size].T  # column j = H e_j


def dataset_hessian(loss_on_batch: Callable[[Any, Any], jax.Array], params: Any,
                    batches: Iterable[Any], *,
                    max_parameters: int = DEFAULT_MAX_PARAMETERS,
                    binding: str = "`max_parameters`",
                    count_fn: Callable[[Any], int] = batch_count,
                    progress: Optional[Callable[[int, int, float], None]] = None,
                    columns_per_pass: Optional[int] = DEFAULT_COLUMNS_PER_PASS
                    ) -> jax.Array:
  """The exact Hessian [P, P] of the mean loss over all transitions of `batches`.

  Args:
    loss_on_batch: (params, batch) -> scalar, the mean of a per-transition loss over
      the batch's transitions.
    params: the point at which the Hessian is taken (a pytree); P is its number of
      scalars, in `flat_loss`'s order.
    batches: a sequence or iterator of batches covering the dataset (each transition
      once); they may differ in size. Read once, one at a time.
    max_parameters, binding: `check_size`'s limit and the setting named in its
      refusal, which comes before any batch is read or anything P x P is allocated.
    count_fn: the number of transitions of a batch (default: its leading dimension).
    progress: called after each batch as progress(batches done, transitions done,
      seconds since the start), once the batch's Hessian is computed.
    columns_per_pass: `batch_hessian`'s block of Hessian columns computed together
      (None: all at once, `jax.hessian`).

  Returns:
    sum_b n_b H_b / sum_b n_b, with H_b the Hessian of batch b's loss and n_b its
    transition count: the Hessian of the mean over all transitions. In the parameters'
    dtype (float32; float64 with jax_enable_x64 and float64 parameters). Each batch's
    Hessian is `batch_hessian` of the flat loss, jitted (a batch of another size
    compiles once more); the running sum stays on the device.

  Raises:
    ConfigError: P above `max_parameters`.
    ValueError: `batches` holds no transition.
  """
  theta0, unravel = flatten_util.ravel_pytree(params)
  size = int(theta0.shape[0])
  check_size(size, max_parameters, binding)

  @jax.jit
  def add_batch(total, theta, batch, count):
    hessian = batch_hessian(lambda t: loss_on_batch(unravel(t), batch), theta,
                            columns_per_pass)
    return total + count * hessian.astype(total.dtype)

  total = jnp.zeros((size, size), theta0.dtype)
  done, transitions, start = 0, 0, time.perf_counter()
  for batch in batches:
    count = count_fn(batch)
    if count <= 0:
      continue
    total = add_batch(total, theta0, batch, jnp.asarray(count, theta0.dtype))
    done, transitions = done + 1, transitions + count
    if progress is not None:
      total.block_until_ready()
      progress(done, transitions, time.perf_counter() - start)
  if transitions == 0:
    raise ValueError("dataset_hessian: the batches hold no transition.")
  return total / jnp.asarray(transitions, theta0.dtype)


def hessian_eigenvalues(hessian: Any) -> np.ndarray:
  """Eigenvalues of (H + H^T) / 2, ascending, float64: `np.linalg.eigvalsh` of the
  symmetrised matrix in float64 (a computed Hessian is symmetric up to rounding)."""
  matrix = np.array(hessian, dtype=np.float64)  # a copy, symmetrised in place
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
    raise ValueError(f"A Hessian is a square matrix, got shape {matrix.shape}.")
  matrix += matrix.T
  matrix *= 0.5
  return np.linalg.eigvalsh(matrix)


def spectrum_summary(eigenvalues: Any, tol: float = DEFAULT_TOL) -> dict[str, float]:
  """Numbers that describe a Hessian's spectrum.

  Args:
    eigenvalues: the P eigenvalues (any order).
    tol: relative tolerance: an eigenvalue is "near zero" when
      |lambda| <= tol * max_i |lambda_i| (default DEFAULT_TOL = 1e-3).

  Returns:
    dict with
      num_parameters: P, the number of eigenvalues;
      fraction_near_zero: the fraction of eigenvalues near zero;
      max_eigenvalue, min_eigenvalue: the largest and the smallest (most negative);
      num_negative: eigenvalues below -tol * max |lambda| (negative beyond the near-zero
        band, so rounding around exact zeros is not counted);
      negative_fraction: num_negative / P;
      trace: the sum of the eigenvalues (the Hessian's trace);
      tol: the relative tolerance used.
    Near zero, negative and the rest (positive beyond the band) partition the
    eigenvalues. An all-zero spectrum is all near zero.
  """
  values = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
  if values.size == 0:
    raise ValueError("spectrum_summary: no eigenvalues.")
  if not 0 <= tol < 1:
    raise ValueError(f"spectrum_summary: tol is a relative tolerance in [0, 1), got {tol}.")
  threshold = tol * float(np.max(np.abs(values)))
  near_zero = np.abs(values) <= threshold
  negative = values < -threshold
  return {
      "num_parameters": int(values.size),
      "fraction_near_zero": float(np.mean(near_zero)),
      "max_eigenvalue": float(np.max(values)),
      "min_eigenvalue": float(np.min(values)),
      "num_negative": int(np.sum(negative)),
      "negative_fraction": float(np.mean(negative)),
      "trace": float(np.sum(values)),
      "tol": float(tol),
  }


def _without_noise(agent):
  """`agent`, or a shallow copy of it whose network runs deterministically when given a
  key (dropout and VIB sampling off: `common.ValueAgent.apply` then ignores the key)."""
  if not getattr(agent, "_stochastic", False):
    return agent
  quiet = copy.copy(agent)
  quiet._stochastic = False  # pylint: disable=protected-access
  return quiet


def td_loss_on_batch(agent, target_params: Any, key: Optional[jax.Array] = None
                     ) -> Callable[[Any, Any], jax.Array]:
  """(params, batch) -> the agent's scalar loss on the batch, for `dataset_hessian`.

  The loss is `agent.loss(params, target_params, batch, key)` (its first element: the
  agents return (loss, metrics)), i.e. the objective the agent's gradient steps
  descend: the TD loss plus any regulariser terms bound to the agent, as a function of
  the online parameters, with `target_params` held fixed (the semi-gradient TD
  objective). The network's stochastic interventions (dropout, VIB sampling) are off,
  and `key` (default PRNGKey(0)) is fixed, so the loss is one deterministic function
  of the parameters.
  """
  key = jax.random.PRNGKey(0) if key is None else key
  quiet = _without_noise(agent)

  def loss_on_batch(params, batch):
    loss = quiet.loss(params, target_params, batch, key)
    return loss[0] if isinstance(loss, tuple) else loss

  return loss_on_batch


def dataset_indices(data: sampler.ReplayArrays,
                    max_transitions: Optional[int] = None) -> np.ndarray:
  """Flat indices of the valid transitions of the offline data, in the data's order
  (`data.valid`), the first `max_transitions` of them if given."""
  valid = np.asarray(jax.device_get(data.valid))
  if max_transitions is not None:
    valid = valid[:int(max_transitions)]
  return valid


def transition_batches(data: sampler.ReplayArrays, indices: Any, chunk_size: int, *,
                       stack_size: int, update_horizon: int = 1,
                       gamma: float = 0.99) -> Iterator[sampler.Transition]:
  """The transitions at `indices`, in order, as batches of `chunk_size` (the last one
  smaller), each built by `sampler.gather_transitions` (the runner's sampler, for given
  indices instead of random ones) with the agent's stack size, horizon and discount."""
  if int(chunk_size) < 1:
    raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
  gather = jax.jit(functools.partial(sampler.gather_transitions, stack_size=stack_size,
                                     update_horizon=update_horizon, gamma=gamma))
  indices = np.asarray(indices)
  for begin in range(0, len(indices), int(chunk_size)):
    chunk = jnp.asarray(indices[begin:begin + int(chunk_size)])
    yield gather(data, chunk)
