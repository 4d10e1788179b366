"""batch_rl: offline and online value-based agents for studying feature rank collapse."""
import setuptools

setuptools.setup(
    name="batch_rl",
    version="0.1.0",
    description=(
        "JAX/Flax Dopamine-style agents on the DQN Replay dataset for studying "
        "implicit under-parameterization (srank), DR3 and implicit regularization."
    ),
    packages=setuptools.find_packages(include=["batch_rl", "batch_rl.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.10",
        "optax>=0.2.3",
        "numpy>=1.26",
        "gin-config>=0.5",
        "absl-py>=2.0",
        # tf.summary writes the TensorBoard event files and tf.io.gfile reads gs:// paths.
        # TensorFlow is kept off GPUs at import time (batch_rl/tf_utils.py); JAX owns them.
        "tensorflow>=2.15",
        "tensorboard>=2.15",  # not a dependency of TensorFlow since 2.20; tf.summary.text and the UI need it
        # Reference implementation of the DQN Replay on-disk format (tests compare against it).
        "dopamine-rl==4.1.2",
        "ale-py>=0.12",  # its C++ vector env runs the Atari evaluation
        "gymnasium>=1.0",
        "minatar>=1.0.15",
        "mujoco>=3.0",  # gymnasium's MuJoCo tasks (Hopper-v5, ...): continuous control
        "bsuite>=0.3.6",  # catch, cartpole, mountain_car: the empirical study's offline lab
        "opencv-python-headless>=4.8",
        # analysis/: reading TensorBoard logs into tables and drawing the papers' figures.
        "tbparse>=0.0.9",
        "pandas>=2.2,<3",  # rliable pins arch<8, and arch 7 fails to import under pandas 3
        "matplotlib>=3.8",
        "scipy>=1.11",
        "rliable>=1.2",
        "tqdm>=4.60",  # progress bars of `python -m batch_rl.data` (convert, verify, subsample)
        # RL Unplugged Atari backend (load_fixed_replay.tfds_name); etils' lazy imports in
        # its dataset preparation need importlib_resources, which tfds does not declare.
        "tensorflow-datasets>=4.9",
        "importlib_resources>=6",
    ],
    extras_require={
        "cuda": ["jax[cuda12]"],
        # nbclient + ipykernel execute analysis/notebooks in the tests (kernel "python3").
        "dev": ["pytest>=8", "pytest-xdist>=3", "nbclient>=0.10", "nbformat>=5.10",
                "ipykernel>=6.29"],
        # Study executors: --executor slurm (submitit) and --executor ray.
        "cluster": ["submitit>=1.5.4", "ray>=2.60"],
    },
)
