"""Training, evaluation and model-store tooling for genre_detector (`python -m train --help`)."""
