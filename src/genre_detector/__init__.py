"""genre_detector: label music by genre and match it by sound.

A track's audio becomes genre probabilities from five models and their calibrated ensemble
(ONNX Runtime), a timeline, and a 64-number embedding; the catalog stores consented tracks
with their embeddings, answers "similar" (cosine between embeddings) and notifies watches.

Rooms, along the flow of data (tests/test_layout.py keeps imports going down):
config, errors -> audio (decode, log-mel windows) -> models (families, architectures) ->
runtime (model store, ONNX sessions) -> scoring (score_track -> TrackResult) -> catalog
(database, search, watches) -> serve (BentoML services) | batch (the tagger of a library).
`python -m genre_detector --help` is the command line.
"""

__version__ = "0.1.0"
