"""Datasets on disk: the DQN Replay format and its sources (.gz checkpoints, the
memory-mapped store, RL Unplugged), subsampling, integrity checks, streaming, the
logger that writes new datasets, and the quickstart data."""
