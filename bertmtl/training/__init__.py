"""Training: set-up, the loop, checkpointing, evaluation during training, optimizers, signals."""
