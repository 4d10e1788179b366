"""Exact tabular solvers of the gridworld MDP, numpy float64 (spec section 3).

Arrays: P [S, A, S] transition probabilities, r [S] state rewards, Q [S, A], pi [S, A]
(rows sum to 1). alpha is the soft-max temperature: V(s) = alpha logsumexp(Q(s,:)/alpha),
alpha = 0 meaning the hard max (and a greedy policy).
"""
from __future__ import annotations

import numpy as np


def soft_value(q: np.ndarray, alpha: float) -> np.ndarray:
  """[S]: alpha * logsumexp(Q(s, :) / alpha); max_a Q(s, a) when alpha == 0."""
  q = np.asarray(q, np.float64)
  m = q.max(axis=1)
  if alpha == 0:
    return m
  return m + alpha * np.log(np.exp((q - m[:, None]) / alpha).sum(axis=1))


def bellman_backup(q: np.ndarray, transitions: np.ndarray, rewards: np.ndarray,
                   gamma: float, alpha: float) -> np.ndarray:
  """(TQ)(s, a) = r(s) + gamma sum_s' P(s'|s, a) V(s'), V the soft (or hard) max."""
  return rewards[:, None] + gamma * transitions @ soft_value(q, alpha)


def value_iteration(transitions: np.ndarray, rewards: np.ndarray, gamma: float,
                    alpha: float, max_iterations: int | None = None,
                    tol: float = 1e-8) -> tuple[np.ndarray, int]:
  """Q* by iterating the backup from Q = 0 (Fu: max(2|S|, 1000) iterations, stop at
  max|TQ - Q| < tol). Returns (Q* [S, A] float64, iterations run)."""
  num_states, num_actions, _ = transitions.shape
  max_iterations = max(2 * num_states, 1000) if max_iterations is None else max_iterations
  q = np.zeros((num_states, num_actions))
  for it in range(1, max_iterations + 1):
    q_new = bellman_backup(q, transitions, rewards, gamma, alpha)
    diff = np.abs(q_new - q).max()
    q = q_new
    if diff < tol:
      return q, it
  return q, max_iterations


def boltzmann_policy(q: np.ndarray, alpha: float) -> np.ndarray:
  """pi(a|s) = softmax(Q(s, :) / alpha); alpha == 0: greedy, uniform over ties."""
  q = np.asarray(q, np.float64)
  if alpha == 0:
    best = q == q.max(axis=1, keepdims=True)
    return best / best.sum(axis=1, keepdims=True)
  z = np.exp((q - q.max(axis=1, keepdims=True)) / alpha)
  return z / z.sum(axis=1, keepdims=True)


def uniform_policy(num_states: int, num_actions: int) -> np.ndarray:
  return np.full((num_states, num_actions), 1.0 / num_actions)


def policy_transitions(transitions: np.ndarray, policy: np.ndarray) -> np.ndarray:
  """[S, S]: P_pi(s'|s) = sum_a pi(a|s) P(s'|s, a)."""
  return np.einsum("sa,sat->st", policy, transitions)


def entropy_bonus(policy: np.ndarray, alpha: float) -> np.ndarray:
  """[S]: -alpha sum_a pi log pi (0 log 0 = 0)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    plogp = np.where(policy > 0, policy * np.log(policy), 0.0)
  return -alpha * plogp.sum(axis=1)


def policy_evaluation(transitions: np.ndarray, rewards: np.ndarray, gamma: float,
                      policy: np.ndarray, alpha: float, max_iterations: int = 10_000,
                      tol: float = 1e-10) -> np.ndarray:
  """Soft Q^pi by iteration: Q <- r + gamma P V^pi, V^pi(s) = sum_a pi (Q - alpha log pi).

  The alpha-scaled entropy term (Fu's `softq_evaluation` drops the alpha, a bug), so
  that Q^{softmax(Q*/alpha)} = Q*. Returns [S, A] float64.
  """
  bonus = entropy_bonus(policy, alpha)
  q = np.zeros(policy.shape)
  for _ in range(max_iterations):
    v = (policy * q).sum(axis=1) + bonus
    q_new = rewards[:, None] + gamma * transitions @ v
    if np.abs(q_new - q).max() < tol:
      return q_new
    q = q_new
  return q


def expected_return(transitions: np.ndarray, rewards: np.ndarray, policy: np.ndarray,
                    start_state: int, horizon: int) -> float:
  """Exact E[sum_{t<horizon} r(s_t)] from s_0 = start under pi (state distribution
  propagated through P_pi)."""
  p_pi = policy_transitions(transitions, policy)
  d = np.zeros(rewards.shape[0])
  d[start_state] = 1.0
  total = 0.0
  for _ in range(horizon):
    total += d @ rewards
    d = d @ p_pi
  return float(total)
