r"""Perturbed evaluation of a finished (or running) offline run's newest checkpoint.

  python -m batch_rl.runners.evaluate_perturbed --run_dir=runs/qs_dqn \
      --gin_bindings="PerturbedEvaluation.levels = {'shift': [1, 2], 'scale': [0.5]}"

Rebuilds the run's agent and evaluation from its own config.gin (then --gin_files and
--gin_bindings, typically `PerturbedEvaluation.*`), restores the newest checkpoint
<run_dir>/checkpoints/ckpt_<t>.msgpack, and plays, with the Evaluator the run used, the
plain evaluation and one phase per (kind, level) of `PerturbedEvaluation`
(runners/perturbed_evaluation.py; its `every` does not apply here). The results are
TensorBoard scalars at step t in <run_dir>/perturbed/ (or --out), with the tags a run
logs itself: Eval/AverageReturn and Eval/NumEpisodes (the plain phase, at the perturbed
phases' step budget: the metric's unperturbed score), Eval/Perturbed/<kind>/<level> and
Eval/PerturbedEpisodes/<kind>/<level>. Keys and environment seeds are the run's for
iteration t, so these are the values the run itself would log at step t with
`FixedReplayRunner.perturbed_evaluation` bound. Nothing of the run's own is written.

A rerun into the same --out evaluates only what is not there yet at that step (new
levels, or a newer checkpoint); one with another step budget, epsilon or number of
environments is refused (they are recorded in <out>/settings.json), so no tag is
logged twice. A run without a checkpoint, or not an offline run, is refused.

Exit status: 0 done; 2 bad input (nothing written).
"""
import argparse
import json
import logging
import os
import sys
import time
from typing import Optional, Sequence

OUT_DIR = "perturbed"
SETTINGS_FILE = "settings.json"

log = logging.getLogger("batch_rl")


def evaluate_run(run_dir: str, gin_files: Sequence[str] = (), bindings: Sequence[str] = (),
                 out: Optional[str] = None) -> tuple[int, dict[str, float]]:
  """Evaluates `run_dir`'s newest checkpoint (module docstring); returns (its iteration,
  the scalars written now). ConfigError (nothing written) on bad input."""
  import jax  # pylint: disable=g-import-not-at-top
  from batch_rl import checkpointing  # pylint: disable=g-import-not-at-top
  from batch_rl import summary_writer  # pylint: disable=g-import-not-at-top
  from batch_rl.agents import common as agent_common  # pylint: disable=g-import-not-at-top
  from batch_rl.environments import factory  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import common  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import perturbed_evaluation  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import posthoc  # pylint: disable=g-import-not-at-top
  from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top

  run = posthoc.open_offline_run(run_dir, gin_files, bindings, "evaluate_perturbed",
                                 "there is no trained policy to evaluate yet")
  settings, checkpoint_dir, iteration = run.settings, run.checkpoint_dir, run.iterations[-1]
  perturbed = perturbed_evaluation.PerturbedEvaluation()
  env_name = f"{settings['domain']}:{settings['game']}"
  seed = settings["seed"]
  probe = factory.create_environment(env_name, seed=seed)
  spec = factory.observation_spec_of(probe)
  perturbed.check(tuple(spec.shape), settings["evaluation_steps"], "FixedReplayRunner")
  steps = perturbed.evaluation_steps or settings["evaluation_steps"]
  recorded = {"evaluation_steps": int(steps), "eval_epsilon": float(settings["eval_epsilon"]),
              "num_eval_envs": int(settings["num_eval_envs"])}
  out = out or os.path.join(run_dir, OUT_DIR)
  if os.path.realpath(out) in (os.path.realpath(run_dir), os.path.realpath(checkpoint_dir)):
    raise ConfigError(f"--out={out} is the run's own directory; its perturbed evaluations "
                      f"go to a folder of their own (default <run_dir>/{OUT_DIR}).")
  settings_path = os.path.join(out, SETTINGS_FILE)
  if os.path.isfile(settings_path):
    with open(settings_path) as f:
      stored = json.load(f)
    changed = [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in recorded.items()
               if stored.get(k) != v]
    if changed:
      raise ConfigError(f"{out} holds perturbed evaluations made with other settings ("
                        + "; ".join(changed) + "): pass another --out to keep both.")
  done = summary_writer.read_scalars(out) if os.path.isdir(out) else {}
  done_at = {tag for tag, by_step in done.items() if iteration in by_step}
  plain = "Eval/AverageReturn" not in done_at
  todo = [(k, v) for k, v in perturbed.settings
          if perturbed_evaluation.return_tag(k, v) not in done_at]
  if not plain and not todo:
    log.info("%s already holds every asked evaluation of iteration %d.", out, iteration)
    return iteration, {}

  agent = common.build_agent(settings["agent_fn"], "FixedReplayRunner.agent_fn",
                             probe, env_name)
  state_spec = agent_common.state_spec(tuple(spec.shape) + (probe.stack_size,), spec.dtype)
  key = jax.random.PRNGKey(seed)
  template = common.init_agent_state(agent, jax.random.fold_in(key, 0), state_spec, run_dir)
  params = checkpointing.restore(checkpoint_dir, iteration, template).params
  evaluator = common.Evaluator(env_name, agent.evaluation_act, seed=seed, key=key,
                               num_envs=settings["num_eval_envs"], steps=steps,
                               epsilon=settings["eval_epsilon"])
  finished = common.is_finished(checkpoint_dir, settings["num_iterations"])
  log.info("Evaluating iteration %d of %s (%s), %d steps per phase.", iteration, run_dir,
           "finished" if finished else
           f"unfinished: {settings['num_iterations']} iterations configured", steps)
  metrics = {}
  if plain:
    metrics.update(evaluator(params, iteration).metrics())
  for kind, level in todo:
    start = time.perf_counter()
    result = evaluator.evaluate_seeds(params, iteration, perturbation=(kind, level))[0]
    metrics[perturbed_evaluation.return_tag(kind, level)] = result.average_return
    metrics[perturbed_evaluation.episodes_tag(kind, level)] = float(result.num_episodes)
    log.info("%s = %.3f (%d episodes, %.1f s)", perturbed_evaluation.return_tag(kind, level),
             result.average_return, result.num_episodes, time.perf_counter() - start)
  os.makedirs(out, exist_ok=True)
  checkpointing.write_atomically(settings_path, json.dumps(recorded, indent=1).encode())
  writer = summary_writer.SummaryWriter(out)
  writer.scalars(iteration, metrics)
  writer.close()
  log.info("Wrote %d scalars at step %d to %s.", len(metrics), iteration, out)
  return iteration, metrics


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run_dir", required=True, help="an offline run's base_dir")
  parser.add_argument("--gin_files", action="append", default=[],
                      help="gin files applied after the run's config.gin")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="e.g. \"PerturbedEvaluation.kinds = ['shift']\"")
  parser.add_argument("--out", default=None,
                      help=f"where the events go (default <run_dir>/{OUT_DIR})")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  from batch_rl import config as config_lib  # pylint: disable=g-import-not-at-top
  from batch_rl import validation  # pylint: disable=g-import-not-at-top
  try:
    evaluate_run(args.run_dir, args.gin_files, args.gin_bindings, args.out)
  except config_lib.USER_ERRORS as e:
    print(f"error: {validation.error_message(e)}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
