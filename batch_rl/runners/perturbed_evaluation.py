"""Evaluations with perturbed inputs at several levels, in a run or after it.

    FixedReplayRunner.perturbed_evaluation = @PerturbedEvaluation()
    PerturbedEvaluation.kinds = ['shift', 'scale']
    PerturbedEvaluation.levels = {'shift': [1, 2, 4], 'scale': [0.25, 0.5, 1.0]}
    PerturbedEvaluation.every = 0        # 0: only after the last iteration

(or `--gin_files=gin_configs/evaluation/perturbed.gin`). At each iteration it is due, every
(kind, level) is one more evaluation phase of the checkpoint's policy with the states
it sees perturbed (environments/perturbations.py; the environments, their seeds and
the policy's keys are those of the iteration's plain evaluation), logged at the
iteration's step as

    Eval/Perturbed/<kind>/<level>           the phase's average return
    Eval/PerturbedEpisodes/<kind>/<level>   the episodes it counted

with <level> written by `perturbations.level_name` (2, 0.25, 1). Every key derives from
(seed, iteration, kind, level), so a resumed run logs what an uninterrupted one logs,
and the same evaluation after training (`python -m batch_rl.runners.evaluate_perturbed`)
logs what the run would have logged at that iteration. `analysis/robustness.py` turns
the tags into the robustness metric of Gulcehre et al. 2022 (Section 11).
"""
from typing import Any, Callable, Mapping, Optional, Sequence

import gin

from batch_rl import validation
from batch_rl.environments import perturbations
from batch_rl.validation import ConfigError

RETURN_TAG = "Eval/Perturbed/{kind}/{level}"
EPISODES_TAG = "Eval/PerturbedEpisodes/{kind}/{level}"
SECONDS_TAG = "Time/PerturbedEvaluateSeconds"
DEFAULT_LEVELS = {"shift": (1, 2, 4), "scale": (0.25, 0.5, 1.0)}
OWNER = "PerturbedEvaluation"


def return_tag(kind: str, level) -> str:
  return RETURN_TAG.format(kind=kind, level=perturbations.level_name(level))


def episodes_tag(kind: str, level) -> str:
  return EPISODES_TAG.format(kind=kind, level=perturbations.level_name(level))


@gin.configurable
class PerturbedEvaluation:
  """Which perturbations to evaluate at which levels, and when.

  Args:
    kinds: perturbations to evaluate, of `perturbations.KINDS` ('shift', 'scale').
    levels: {kind: [levels]}; a kind missing here takes DEFAULT_LEVELS. A shift level
      is whole pixels in [0, min(H, W) // 2], a scale level a zoom range in [0, 1]
      (environments/perturbations.py); level 0 is the plain evaluation again.
    every: evaluate after every `every`-th iteration (iterations every-1, 2 every-1,
      ... counted from 0) and after the last; 0 = only after the last iteration.
    evaluation_steps: the step budget of each phase; None = the runner's
      `evaluation_steps`.
  """

  def __init__(self, kinds: Sequence[str] = perturbations.KINDS,
               levels: Optional[Mapping[str, Sequence[float]]] = None, every: int = 0,
               evaluation_steps: Optional[int] = None):
    if isinstance(kinds, str) or not kinds:
      raise ConfigError(f"`{OWNER}.kinds` must be a non-empty list of perturbations, of "
                        f"{', '.join(repr(k) for k in perturbations.KINDS)}; got {kinds!r}.")
    for kind in kinds:
      perturbations.check_kind(kind, f"{OWNER}.kinds")
    levels = dict(levels or {})
    for kind in levels:
      perturbations.check_kind(kind, f"{OWNER}.levels")
      if kind not in kinds:
        raise ConfigError(f"`{OWNER}.levels` gives levels of {kind!r}, which is not in "
                          f"`{OWNER}.kinds` ({list(kinds)}); add it there or drop it.")
    validation.check_int_at_least(f"{OWNER}.every", every, 0)
    if evaluation_steps is not None:
      validation.check_int_at_least(f"{OWNER}.evaluation_steps", evaluation_steps, 1)
    self.kinds = tuple(kinds)
    for kind, values in levels.items():
      if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise ConfigError(f"`{OWNER}.levels` maps each kind to a list of levels, e.g. "
                          f"{{'{kind}': [1, 2]}}; got {values!r} for {kind!r}.")
    self.levels = {kind: tuple(levels.get(kind, DEFAULT_LEVELS[kind])) for kind in kinds}
    for kind, values in self.levels.items():
      if not values:
        raise ConfigError(f"`{OWNER}.levels` gives no levels of {kind!r}.")
    self.every = int(every)
    self.evaluation_steps = evaluation_steps

  @property
  def settings(self) -> list[tuple[str, float]]:
    """(kind, level) of every phase, in order, each once."""
    out = []
    for kind in self.kinds:
      for level in self.levels[kind]:
        if (kind, perturbations.level_name(level)) not in {
            (k, perturbations.level_name(v)) for k, v in out}:
          out.append((kind, level))
    return out

  def check(self, frame_shape: Sequence[int], runner_steps: int, owner: str) -> None:
    """ConfigError naming the binding unless every level fits frames of `frame_shape`
    and the phases have a step budget (this one's, or the runner's `runner_steps`)."""
    for kind, level in self.settings:
      perturbations.check_level(kind, level, tuple(frame_shape), f"{OWNER}.levels")
    if self.evaluation_steps is None and runner_steps < 1:
      raise ConfigError(
          f"`{owner}.perturbed_evaluation` evaluates with the runner's evaluation steps, "
          f"and `{owner}.evaluation_steps` is {runner_steps}: bind "
          f"`{OWNER}.evaluation_steps` to the steps of each perturbed phase.")

  def due(self, iteration: int, num_iterations: int) -> bool:
    """Whether the perturbed phases run after `iteration` (counted from 0)."""
    last = iteration == num_iterations - 1
    return last or (self.every > 0 and (iteration + 1) % self.every == 0)

  def evaluate(self, evaluator, params: Any, iteration: int, runner_steps: int,
               should_stop: Optional[Callable[[], bool]] = None) -> list[dict[str, float]]:
    """Every phase of `iteration` for every seed of `evaluator` (a common.Evaluator);
    returns one {tag: value} per seed. evaluation.Stopped as the Evaluator raises it."""
    steps = runner_steps if self.evaluation_steps is None else self.evaluation_steps
    metrics = [{} for _ in evaluator.seeds]
    for kind, level in self.settings:
      results = evaluator.evaluate_seeds(params, iteration, should_stop,
                                         perturbation=(kind, level), steps=steps)
      for seed_metrics, result in zip(metrics, results):
        seed_metrics[return_tag(kind, level)] = result.average_return
        seed_metrics[episodes_tag(kind, level)] = float(result.num_episodes)
    return metrics
