"""`python -m batch_rl.data`: the dataset command line (batch_rl/datasets/cli.py)."""
