"""Test-session settings that must be in place before numpy/JAX are imported."""
import os

# JAX's CPU SVD/eigh call LAPACK through scipy's OpenBLAS, whose threads compete with
# XLA's on a small machine (2 CI cores), many times slower than with one thread
# (docs/gridworld.md, "Lp cost", has the figures). Subprocesses (train.py runs in
# tests) inherit this.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
