"""Runners: the loops that train an agent and write a run directory.

offline.py (FixedReplayRunner, fixed datasets), online.py (OnlineRunner, an agent
filling its own replay), gridworld.py (GridworldRunner, the exact-oracle lab), the
chores they share in common.py and diagnose.py, and registry.py (`create_runner`,
what train.py builds).
"""
