r"""Eigenvalue spectrum of the Hessian of an offline run's TD loss over its dataset.

  python -m batch_rl.runners.hessian_spectrum --run_dir=runs/bsuite_catch_1x64 \
      --iterations=98,99 --max_transitions=10000

Rebuilds the run's agent and data from its own config.gin (then --gin_files and
--gin_bindings, e.g. a moved dataset's `load_fixed_replay.replay_dir`), restores the
checkpoints <run_dir>/checkpoints/ckpt_<t>.msgpack of the asked iterations (default:
the newest), and computes, for each, the exact Hessian with respect to all online
parameters of the loss the agent descends (its TD loss, and any regulariser bound to
it), with the checkpoint's target parameters held fixed and the network's dropout or
sampling off, averaged over the run's dataset: every valid transition once (the first
--max_transitions of them, in the data's order, if given), in chunks of --chunk_size
(batch_rl/hessian.py). Its eigenvalues are written to <out>/hessian_<t>.npz
(eigenvalues, iteration, num_transitions, num_parameters, tol) and summarised as
TensorBoard scalars at step t in <out> (default <run_dir>/hessian):
Hessian/fraction_near_zero (|lambda| <= tol * max |lambda|), Hessian/max_eigenvalue,
Hessian/min_eigenvalue and Hessian/negative_fraction (lambda < -tol * max |lambda|).
Nothing of the run's own is written.

The Hessian has P x P entries for P parameters (float32: 4 P^2 bytes), so networks
above --max_parameters are refused before anything is loaded; it suits the small MLPs
of the study's bsuite experiments (a 1 x 64 MLP on catch has 3,459 parameters). Its cost
grows as P^2 times the number of transitions. A run keeps only its newest
`FixedReplayRunner.keep_checkpoints` checkpoints (2 by default); iterations whose
checkpoint is gone are refused, with the ones on disk listed.

A rerun into the same --out computes only the iterations it does not hold yet; one with
another --max_transitions or --tol is refused (they are recorded in
<out>/settings.json), so no tag is logged twice. A run without a checkpoint, or not an
offline run, is refused.

Exit status: 0 done; 2 bad input (nothing written); 1 a file could not be written.
"""
import argparse
import io
import json
import logging
import os
import sys
import time
from typing import Optional, Sequence

OUT_DIR = "hessian"
SETTINGS_FILE = "settings.json"
TAGS = {"fraction_near_zero": "Hessian/fraction_near_zero",
        "max_eigenvalue": "Hessian/max_eigenvalue",
        "min_eigenvalue": "Hessian/min_eigenvalue",
        "negative_fraction": "Hessian/negative_fraction"}
# Transitions per jitted Hessian computation when --chunk_size is not given (the memory
# it needs grows with the chunk times hessian.DEFAULT_COLUMNS_PER_PASS, not with P).
DEFAULT_CHUNK_SIZE = 1024

log = logging.getLogger("batch_rl")


def npz_path(out: str, iteration: int) -> str:
  """<out>/hessian_<iteration>.npz."""
  return os.path.join(out, f"hessian_{iteration}.npz")


def parse_iterations(text: Optional[str]) -> Optional[list[int]]:
  """'9,99' -> [9, 99] (sorted, without repeats); None or '' -> None (the newest)."""
  from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top
  if text is None or not text.strip():
    return None
  try:
    values = sorted({int(part) for part in text.split(",") if part.strip()})
  except ValueError:
    raise ConfigError(f"--iterations={text} must be comma-separated iteration numbers, "
                      "e.g. --iterations=9,99.") from None
  if not values or values[0] < 0:
    raise ConfigError(f"--iterations={text} must be iteration numbers >= 0.")
  return values


def _choose_iterations(asked: Optional[list[int]], available: list[int], keep: int,
                       checkpoint_dir: str) -> list[int]:
  from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top
  if asked is None:
    return [available[-1]]
  missing = [t for t in asked if t not in available]
  if missing:
    raise ConfigError(
        f"--iterations: {checkpoint_dir} holds no checkpoint of iteration(s) "
        f"{', '.join(map(str, missing))}; it holds {', '.join(map(str, available))}. The "
        f"run keeps its newest {keep} checkpoint(s) (`FixedReplayRunner.keep_checkpoints`"
        "): a run that should keep earlier ones binds it higher.")
  return asked


def _check_settings(out: str, recorded: dict) -> None:
  from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top
  path = os.path.join(out, SETTINGS_FILE)
  if not os.path.isfile(path):
    return
  with open(path) as f:
    stored = json.load(f)
  changed = [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in recorded.items()
             if stored.get(k) != v]
  if changed:
    raise ConfigError(f"{out} holds Hessian spectra made with other settings ("
                      + "; ".join(changed) + "): pass another --out to keep both.")


def _npz_bytes(**arrays) -> bytes:
  import numpy as np  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def hessian_run(run_dir: str, iterations: Optional[Sequence[int]] = None,
                max_transitions: Optional[int] = None, gin_files: Sequence[str] = (),
                bindings: Sequence[str] = (), out: Optional[str] = None, *,
                max_parameters: Optional[int] = None, chunk_size: Optional[int] = None,
                tol: Optional[float] = None) -> dict[int, dict[str, float]]:
  """Computes the asked iterations' Hessian spectra of `run_dir` (module docstring).

  Returns {iteration: hessian.spectrum_summary} of the iterations computed now (those
  already in `out` are skipped). ConfigError (nothing written) on bad input.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from batch_rl import checkpointing  # pylint: disable=g-import-not-at-top
  from batch_rl import hessian  # pylint: disable=g-import-not-at-top
  from batch_rl import summary_writer  # pylint: disable=g-import-not-at-top
  from batch_rl import validation  # pylint: disable=g-import-not-at-top
  from batch_rl.agents import common as agent_common  # pylint: disable=g-import-not-at-top
  from batch_rl.environments import factory  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import common  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import posthoc  # pylint: disable=g-import-not-at-top
  from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top

  max_parameters = hessian.DEFAULT_MAX_PARAMETERS if max_parameters is None else max_parameters
  tol = hessian.DEFAULT_TOL if tol is None else tol
  validation.check_int_at_least("--max_parameters", max_parameters, 1)
  validation.check_in_range("--tol", tol, 0.0, 1.0, high_open=True,
                            meaning="relative to the largest |eigenvalue|")
  if max_transitions is not None:
    validation.check_int_at_least("--max_transitions", max_transitions, 1)
  if chunk_size is not None:
    validation.check_int_at_least("--chunk_size", chunk_size, 1)

  run = posthoc.open_offline_run(run_dir, gin_files, bindings, "hessian_spectrum",
                                 "there are no trained parameters yet")
  settings, checkpoint_dir, available = run.settings, run.checkpoint_dir, run.iterations
  chosen = _choose_iterations(None if iterations is None else sorted(set(iterations)),
                              available, settings["keep_checkpoints"], checkpoint_dir)

  out = out or os.path.join(run_dir, OUT_DIR)
  if os.path.realpath(out) in (os.path.realpath(run_dir), os.path.realpath(checkpoint_dir)):
    raise ConfigError(f"--out={out} is the run's own directory; its Hessian spectra go to "
                      f"a folder of their own (default <run_dir>/{OUT_DIR}).")
  validation.check_writable_dir(out, "--out", "where the Hessian spectra are written")
  recorded = {"max_transitions": max_transitions, "tol": float(tol)}
  _check_settings(out, recorded)
  todo = [t for t in chosen if not os.path.isfile(npz_path(out, t))]
  if not todo:
    log.info("%s already holds the Hessian spectra of iteration(s) %s.", out,
             ", ".join(map(str, chosen)))
    return {}

  env_name = f"{settings['domain']}:{settings['game']}"
  seed = settings["seed"]
  probe = factory.create_environment(env_name, seed=seed)
  spec = factory.observation_spec_of(probe)
  agent = common.build_agent(settings["agent_fn"], "FixedReplayRunner.agent_fn",
                             probe, env_name)
  state_spec = agent_common.state_spec(tuple(spec.shape) + (probe.stack_size,), spec.dtype)
  key = jax.random.PRNGKey(seed)
  # The state's structure only (traced, not run): restoring a checkpoint fills it in.
  template = jax.eval_shape(
      lambda k: common.init_agent_state(agent, k, state_spec, run_dir), key)
  size = hessian.num_parameters(template.params)
  hessian.check_size(size, max_parameters, "--max_parameters")
  chunk = chunk_size or DEFAULT_CHUNK_SIZE

  data_seed = seed if settings.get("data_seed") is None else settings["data_seed"]
  replay = settings["replay_fn"](game=settings["game"], seed=data_seed,
                                 stack_size=probe.stack_size,
                                 update_horizon=agent.update_horizon, gamma=agent.gamma)
  if tuple(replay.frame_shape) != tuple(spec.shape):
    raise ConfigError(f"The frames in {replay.replay_dir} have shape {replay.frame_shape} "
                      f"but the run's environment {env_name!r} produces {tuple(spec.shape)}: "
                      "check --gin_bindings against the run's data.")
  data = jax.device_put(replay.arrays)
  indices = hessian.dataset_indices(data, max_transitions)
  num_chunks = -(-len(indices) // chunk)
  log.info("Data: %s; the Hessian is over %s of its transitions, in %d chunk(s) of %d.",
           replay.describe(), f"{len(indices):,}" if max_transitions else "all",
           num_chunks, chunk)
  log.info("%d parameters: a %d x %d Hessian (%.3g GiB in float32).", size, size, size,
           hessian.estimate_bytes(size) / 2 ** 30)

  done = summary_writer.read_scalars(out) if os.path.isdir(out) else {}
  every = max(1, num_chunks // 10)
  results, writer = {}, None
  try:
    for iteration in todo:
      state = checkpointing.restore(checkpoint_dir, iteration, template)
      loss_on_batch = hessian.td_loss_on_batch(agent, state.target_params, key)
      batches = hessian.transition_batches(
          data, indices, chunk, stack_size=replay.stack_size,
          update_horizon=agent.update_horizon, gamma=agent.gamma)

      def progress(chunks, transitions, seconds, iteration=iteration):
        if chunks % every == 0 or chunks == num_chunks:
          log.info("iteration %d: chunk %d/%d (%s transitions), %.1f s", iteration, chunks,
                   num_chunks, f"{transitions:,}", seconds)

      start = time.perf_counter()
      matrix = hessian.dataset_hessian(loss_on_batch, state.params, batches,
                                       max_parameters=max_parameters,
                                       binding="--max_parameters", progress=progress)
      matrix = np.asarray(jax.device_get(matrix))
      if not np.all(np.isfinite(matrix)):
        raise ConfigError(f"The Hessian of iteration {iteration}'s loss holds NaN or "
                          "infinite entries: its checkpoint's parameters do not give a "
                          "finite loss on this data.")
      eigen_start = time.perf_counter()
      eigenvalues = hessian.hessian_eigenvalues(matrix)
      del matrix
      summary = hessian.spectrum_summary(eigenvalues, tol)
      log.info("iteration %d: Hessian %.1f s, eigenvalues %.1f s | %.1f%% near zero | "
               "max %.4g | min %.4g | %.1f%% negative", iteration,
               eigen_start - start, time.perf_counter() - eigen_start,
               100 * summary["fraction_near_zero"], summary["max_eigenvalue"],
               summary["min_eigenvalue"], 100 * summary["negative_fraction"])
      os.makedirs(out, exist_ok=True)
      checkpointing.write_atomically(os.path.join(out, SETTINGS_FILE),
                                     json.dumps(recorded, indent=1).encode())
      scalars = {tag: summary[name] for name, tag in TAGS.items()
                 if iteration not in done.get(tag, {})}
      if scalars:  # the .npz, written last, marks the iteration as done
        writer = writer or summary_writer.SummaryWriter(out)
        writer.scalars(iteration, scalars)
      checkpointing.write_atomically(npz_path(out, iteration), _npz_bytes(
          eigenvalues=eigenvalues, iteration=np.int64(iteration),
          num_transitions=np.int64(len(indices)), num_parameters=np.int64(size),
          tol=np.float64(tol)))
      log.info("Wrote %s and %d scalars at step %d.", npz_path(out, iteration),
               len(scalars), iteration)
      results[iteration] = summary
  finally:
    if writer is not None:
      writer.close()
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run_dir", required=True, help="an offline run's base_dir")
  parser.add_argument("--iterations", default=None,
                      help="checkpoint iterations, e.g. 9,99 (default: the newest)")
  parser.add_argument("--max_transitions", type=int, default=None,
                      help="the first N valid transitions of the data (default: all)")
  parser.add_argument("--max_parameters", type=int, default=None,
                      help="refuse networks with more parameters (default 16384: a 1 GiB "
                      "float32 Hessian)")
  parser.add_argument("--chunk_size", type=int, default=None,
                      help="transitions per jitted Hessian computation (default "
                      f"{DEFAULT_CHUNK_SIZE})")
  parser.add_argument("--tol", type=float, default=None,
                      help="near zero: |eigenvalue| <= tol * max |eigenvalue| "
                      "(default 1e-3)")
  parser.add_argument("--gin_files", action="append", default=[],
                      help="gin files applied after the run's config.gin")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="e.g. \"load_fixed_replay.replay_dir = '/data/catch'\"")
  parser.add_argument("--out", default=None,
                      help=f"where the results go (default <run_dir>/{OUT_DIR})")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  from batch_rl import checkpointing  # pylint: disable=g-import-not-at-top
  from batch_rl import config as config_lib  # pylint: disable=g-import-not-at-top
  from batch_rl import validation  # pylint: disable=g-import-not-at-top
  try:
    hessian_run(args.run_dir, parse_iterations(args.iterations), args.max_transitions,
                args.gin_files, args.gin_bindings, args.out,
                max_parameters=args.max_parameters, chunk_size=args.chunk_size,
                tol=args.tol)
  except checkpointing.WriteError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except config_lib.USER_ERRORS as e:
    print(f"error: {validation.error_message(e)}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
