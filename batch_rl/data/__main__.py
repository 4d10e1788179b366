"""python -m batch_rl.data {inspect,convert,subsample,verify} (see batch_rl/datasets/cli.py)."""
import sys

from batch_rl.datasets import cli

if __name__ == "__main__":
  sys.exit(cli.main())
