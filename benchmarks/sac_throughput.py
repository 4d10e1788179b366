r"""SAC's gradient steps per second, and the online loop's environment steps per second.

  python benchmarks/sac_throughput.py                  # both sections, Hopper-v5 shapes
  python benchmarks/sac_throughput.py --sections update --steps 2000
  python benchmarks/sac_throughput.py --smoke          # tiny: shows that it runs

Section `update`: the learner's train step (sample a batch of 256 from 100K random
Hopper-shaped transitions on the device, one gradient step of critics, policy and
temperature, the Polyak target) of SACAgent with two 256-unit hidden layers per network,
timed after compilation, as plain jitted calls (K = 1) and fused K per call
(`learner.make_train_steps`, lax.scan), and CQL-SAC's (10 sampled actions per kind,
K = 1). Rounds alternate between the settings; the median round is reported.

Section `online`: `OnlineRunner` with gin_configs/mujoco/sac.gin on Hopper-v5 at
updates_per_step n = 1 and 16: its own Train/StepsPerSecond (the act-add-update loop
with the MuJoCo steps on the host, diagnostics, evaluation and checkpoints excluded) of
the third iteration; the first holds only the random warm-up, the second compiles.

A published figure on the same measure for comparison: henry-prior/jax-rl's README
(commit 9a8cc7b) gives JAX SAC 5.57 +- 0.07 s per 1,000 training steps, i.e. about 180
environment steps per second with one update each (batch 256, two 256-unit hidden
layers, DM Control cartpole swingup) on a mid-2019 MacBook Pro (2.3 GHz Core i9), on
CPU. Figures move with the machine's load; ratios between rows are measured side by
side.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

PUBLISHED_STEPS_PER_SECOND = 1000 / 5.57  # henry-prior/jax-rl, JAX SAC on CPU


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--sections", default="update,online")
  p.add_argument("--steps", type=int, default=1000, help="timed gradient steps per round")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--fused", type=int, default=100, help="K of the fused row")
  p.add_argument("--env_steps", type=int, default=2000,
                 help="environment steps per iteration of the online section")
  p.add_argument("--n", default="1,16", help="updates_per_step of the online rows")
  p.add_argument("--smoke", action="store_true")
  return p.parse_args(argv)


def random_data(num: int, obs_dim: int, action_dim: int):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from batch_rl.replay import sampler  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  arrays = sampler.ReplayArrays(
      observation=rng.normal(size=(1, num, obs_dim)).astype(np.float32),
      action=rng.uniform(-1, 1, (1, num, action_dim)).astype(np.float32),
      reward=rng.normal(size=(1, num)).astype(np.float32),
      terminal=(rng.random((1, num)) < 0.01).astype(np.uint8),
      valid=np.arange(num - 2, dtype=np.int32))
  return jax.device_put(arrays)


def update_rows(args) -> list[tuple[str, float]]:
  """(setting, gradient steps/s) per setting, the median of alternating rounds."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from batch_rl import actor_critic_networks as acn  # pylint: disable=g-import-not-at-top
  from batch_rl.agents import common, cql_sac, learner, sac  # pylint: disable=g-import-not-at-top
  from batch_rl.environments import specs  # pylint: disable=g-import-not-at-top
  from batch_rl.replay import sampler  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import common as runner_common  # pylint: disable=g-import-not-at-top

  width = 32 if args.smoke else 256
  obs_dim, action_dim = 11, 3  # Hopper-v5
  spec = specs.BoxActionSpec((action_dim,), -1.0, 1.0)
  networks = dict(critic_network=lambda: acn.TwinCriticNetwork(hidden_sizes=(width, width)),
                  policy_network=lambda action_size: acn.GaussianPolicyNetwork(
                      action_size=action_size, hidden_sizes=(width, width)))
  data = random_data(1000 if args.smoke else 100_000, obs_dim, action_dim)
  shape = dict(stack_size=1, update_horizon=1, gamma=0.99)
  settings = []
  for name, agent, k in (
      ("SAC, K = 1", sac.SACAgent(action_spec=spec, batch_size=256, **networks), 1),
      (f"SAC, K = {args.fused} fused", sac.SACAgent(action_spec=spec, batch_size=256,
                                                    **networks), args.fused),
      ("CQL-SAC, K = 1", cql_sac.CQLSACAgent(action_spec=spec, batch_size=256,
                                             **networks), 1)):
    sample = runner_common.make_sampler(sampler.sample_transitions, 256, **shape)
    step = learner.make_train_step(agent.loss, agent.optimizer, sample, 1,
                                   target_update_tau=agent.target_update_tau)
    state = agent.init(jax.random.PRNGKey(0), common.state_spec((obs_dim, 1), jnp.float32))
    totals = learner.zero_metrics(step, state, data)
    fn = learner.make_train_steps(step, k)
    state, totals = fn(state, data, totals)  # compiles
    jax.block_until_ready(state)
    settings.append([name, fn, state, totals, max(1, args.steps // k), k, []])
  for _ in range(args.rounds):
    for setting in settings:
      _, fn, state, totals, calls, k, times = setting
      start = time.perf_counter()
      for _ in range(calls):
        state, totals = fn(state, data, totals)
      jax.block_until_ready(state)
      times.append(calls * k / (time.perf_counter() - start))
      setting[2], setting[3] = state, totals
  return [(s[0], statistics.median(s[6])) for s in settings]


def online_rows(args) -> list[tuple[str, float]]:
  """(setting, environment steps/s) of the online loop per n."""
  import gin  # pylint: disable=g-import-not-at-top
  from batch_rl import config as config_lib  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import registry  # pylint: disable=g-import-not-at-top
  steps = 60 if args.smoke else args.env_steps
  width = 32 if args.smoke else 256
  rows = []
  for n in [float(x) for x in args.n.split(",")]:
    seen = []
    with tempfile.TemporaryDirectory() as tmp:
      gin.clear_config()
      config_lib.parse_gin([os.path.join(REPO, "gin_configs", "mujoco", "sac.gin")], [
          "OnlineRunner.num_iterations = 3", f"OnlineRunner.training_steps = {steps}",
          f"OnlineRunner.min_replay_history = {steps}", "OnlineRunner.evaluation_steps = 0",
          f"OnlineRunner.replay_capacity = {max(3 * steps, 256)}",
          f"OnlineRunner.updates_per_step = {n}",
          "OnlineRunner.diagnostics_batch_size = 256", "OnlineRunner.keep_checkpoints = 1",
          f"SACAgent.batch_size = {32 if args.smoke else 256}",
          f"TwinCriticNetwork.hidden_sizes = ({width}, {width})",
          f"GaussianPolicyNetwork.hidden_sizes = ({width}, {width})"])
      runner = registry.create_runner(base_dir=os.path.join(tmp, "run"))
      runner.run(on_iteration=lambda i, m: seen.append(m["Train/StepsPerSecond"]))
      gin.clear_config()
    rows.append((f"online SAC, n = {n:g}", seen[2]))
  return rows


def main(argv):
  args = parse_args(argv)
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  if args.smoke:
    args.steps, args.rounds, args.fused = 20, 1, 10
  import jax  # pylint: disable=g-import-not-at-top
  sections = args.sections.split(",")
  print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
  if "update" in sections:
    rows = update_rows(args)
    print("\n| update | gradient steps/s | x SAC K = 1 |")
    print("| --- | --- | --- |")
    for name, rate in rows:
      print(f"| {name} | {rate:,.1f} | {rate / rows[0][1]:.2f}x |")
  if "online" in sections:
    rows = online_rows(args)
    print("\n| online loop | env steps/s | x published (180/s at n = 1) |")
    print("| --- | --- | --- |")
    for name, rate in rows:
      print(f"| {name} | {rate:,.1f} | {rate / PUBLISHED_STEPS_PER_SECOND:.2f}x |")
    print(f"\npublished: henry-prior/jax-rl JAX SAC, {PUBLISHED_STEPS_PER_SECOND:.0f} "
          "env steps/s (1 update each, batch 256, 2 x 256; 2019 MacBook Pro CPU)")


if __name__ == "__main__":
  main(sys.argv[1:])
