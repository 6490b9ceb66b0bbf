"""Facts the tests expect of the shipped models (one place for each)."""

# The nine genres of ../shared/data/genre_map.csv, in label order.
NINE = [
    "blues",
    "classical",
    "country",
    "electronic",
    "hiphop",
    "jazz",
    "pop-rock",
    "reggae",
    "rnb",
]

# The keys every /predict reply has (genre_detector.serve.replies.predict_reply).
PREDICT_KEYS = {
    "request_id",
    "duration_s",
    "sample_rate",
    "n_windows",
    "labels",
    "models",
    "ensemble",
    "descriptors",
    "timeline",
    "model_tags",
}
