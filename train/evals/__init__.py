"""Catalog-quality evaluations: how well search and watches match, on the shared clips
(train/evals/README.md). Nothing on the training path imports them."""
