"""Reading TensorBoard logs of batch_rl runs and drawing the papers' figures."""
