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
