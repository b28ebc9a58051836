"""Training: configs, losses, optimisers, the sharded train step, checkpoints and the loop."""
