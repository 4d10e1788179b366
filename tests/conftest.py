"""Test-session settings that must be in place before numpy/JAX are imported."""
import os

# JAX's CPU SVD/eigh call LAPACK through scipy's OpenBLAS, whose threads compete with
# XLA's on a small machine (2 CI cores): with its default threads an SVD-gradient step
# measured 87 ms vs 1.3 ms with one (docs/gridworld.md, "Lp cost"). Subprocesses
# (train.py runs in tests) inherit this.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
