"""Test-session settings that must be in place before numpy/JAX are imported."""
import os

# JAX's CPU SVD/eigh call LAPACK through scipy's OpenBLAS, whose threads compete with
# XLA's on a small machine (2 CI cores), many times slower than with one thread
# (docs/gridworld.md, "Lp cost", has the figures). Subprocesses (train.py runs in
# tests) inherit this.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# JAX's persistent compilation cache: the tests build many runners whose jitted programs
# are the same HLO, and subprocesses (train.py) inherit these variables. Compiled code
# only: results are those of a fresh compilation.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    __import__("tempfile").gettempdir(), "batch_rl_tests_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


# ------------------------------------------------------------------------------------
# The study that tests/test_study_slurm.py and tests/test_study_ray.py run on a cluster
# (marker `cluster`), and its runs' scalars when launched locally, uninterrupted.
import collections  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import fcntl  # pylint: disable=g-import-not-at-top,wrong-import-position
import glob  # pylint: disable=g-import-not-at-top,wrong-import-position
import struct  # pylint: disable=g-import-not-at-top,wrong-import-position
import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 settings x 2 seeds of gridworld FQI, 8 fitting iterations in calls of one, so that
# each run writes 8 checkpoints over ~10 s after ~30 s of start-up (2 CI cores): a
# test can stop one between two of them.
CLUSTER_STUDY = """\
gin_files = ["gin_configs/gridworld/fqi_t10.gin"]
bindings = [
  "GridworldEnv.width = 6",
  "GridworldEnv.height = 6",
  "GridworldRunner.num_iterations = 8",
  "GridworldRunner.iterations_per_call = 1",
  "GridworldRunner.dataset_episodes = 4",
  "GridworldRunner.fast_compile = True",
]
[axes]
"GridworldRunner.gradient_steps" = [1500, 2500]
[names]
"GridworldRunner.gradient_steps" = "T"
[seeds]
binding = "GridworldRunner.seeds"
values = [[0], [1]]
"""
CLUSTER_STUDY_ITERATIONS = 8


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "cluster: launches a study on a SLURM cluster or a Ray instance "
      "(skipped when there is none, a failure when CI=true)")


def read_events(path):
  """The Event protos of one TensorBoard event file (TFRecords, CRCs not checked)."""
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    data = f.read()
  at = 0
  while at + 12 <= len(data):
    (length,) = struct.unpack_from("<Q", data, at)
    if at + 12 + length + 4 > len(data):
      break
    yield event_pb2.Event.FromString(data[at + 12:at + 12 + length])
    at += 12 + length + 4


def run_scalars(run_dir):
  """{(subdirectory, tag, step): [values]} of every scalar under run_dir, one entry
  per logged event (a step logged twice has two values)."""
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  out = collections.defaultdict(list)
  pattern = os.path.join(run_dir, "**", "events.out.tfevents.*")
  for path in sorted(glob.glob(pattern, recursive=True)):
    where = os.path.relpath(os.path.dirname(path), run_dir)
    for event in read_events(path):
      for value in event.summary.value:
        if value.HasField("simple_value"):
          out[(where, value.tag, event.step)].append(float(value.simple_value))
        elif value.HasField("tensor") and not value.tensor.tensor_shape.dim \
            and value.tensor.dtype in (1, 2):  # float or double scalars
          out[(where, value.tag, event.step)].append(
              float(tensor_util.make_ndarray(value.tensor)))
  return dict(out)


def checkpointed_iteration(run_dir):
  """The last iteration checkpointed in run_dir (-1: none)."""
  names = glob.glob(os.path.join(run_dir, "checkpoints", "ckpt_*.msgpack"))
  return max((int(os.path.basename(n)[5:-8]) for n in names), default=-1)


@dataclasses.dataclass
class ClusterStudy:
  """CLUSTER_STUDY written to a file, and its local, uninterrupted scalars."""
  toml: str
  run_names: tuple
  reference_dir: str
  iterations: int = CLUSTER_STUDY_ITERATIONS
  scalars = staticmethod(run_scalars)
  checkpointed_iteration = staticmethod(checkpointed_iteration)

  @staticmethod
  def unavailable(reason):
    """Skips the test, or fails it under CI (CI=true), where the cluster must be."""
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)

  def reference(self):
    """{run name: run_scalars} of the study launched with the local executor.

    Computed once per test session (the first test to ask runs it, under a lock
    that the other xdist workers wait on), so call it after starting the cluster's
    runs.
    """
    done = os.path.join(self.reference_dir, "complete")
    with open(self.reference_dir + ".lock", "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if not os.path.exists(done):
        result = subprocess.run(
            [sys.executable, "-m", "batch_rl.study", "launch", self.toml,
             "--study_dir", self.reference_dir, "--executor", "local",
             "--max_parallel", "2"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        open(done, "w").close()
    return {name: run_scalars(os.path.join(self.reference_dir, *name.split("/")))
            for name in self.run_names}


@pytest.fixture(scope="session")
def cluster_study(tmp_path_factory, worker_id, testrun_uid):
  """The cluster tests' study; its reference runs are shared by the xdist workers."""
  base = tmp_path_factory.getbasetemp()
  shared = base.parent if worker_id != "master" else base
  root = shared / f"cluster_study_{testrun_uid}"
  root.mkdir(exist_ok=True)
  toml = root / "gridworld_cluster.toml"
  if not toml.exists():
    tmp = root / f"gridworld_cluster.toml.{os.getpid()}"
    tmp.write_text(CLUSTER_STUDY)
    os.replace(tmp, toml)
  names = tuple(f"T{t}/seeds_{s}" for t in (1500, 2500) for s in (0, 1))
  return ClusterStudy(toml=str(toml), run_names=names,
                      reference_dir=str(root / "reference"))



@pytest.fixture(scope="session")
def bsuite_cache(tmp_path_factory, worker_id, testrun_uid):
  """A bsuite dataset cache shared by the xdist workers: the tests that train on the
  1,000-step catch dataset (noise 0.1, seed 0) ask for it here, and the first to ask
  logs it while the others wait (bsuite_data's lock)."""
  base = tmp_path_factory.getbasetemp()
  shared = base.parent if worker_id != "master" else base
  root = shared / f"bsuite_cache_{testrun_uid}"
  root.mkdir(exist_ok=True)
  return str(root)
