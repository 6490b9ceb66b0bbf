"""Ports: converting musicnn's original TF1 checkpoints and making the reference outputs that
prove the Keras port (train/ports/README.md). Nothing on the training path imports them."""
