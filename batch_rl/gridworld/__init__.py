"""The IUP gridworld lab: exact oracle (env, tabular), Q-models, neural FQI, runner."""
