"""Training: typed configs, checkpoints, and the trainers."""
