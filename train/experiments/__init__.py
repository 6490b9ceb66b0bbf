"""Experiments: scripts that measure a training or serving choice (train/experiments/README.md).
Nothing on the training path imports them."""
