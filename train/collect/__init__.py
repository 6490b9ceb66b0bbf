"""Build labelled training sets (DIR/GENRE/*.audio + DIR/tracks.csv) from public music APIs.

SOUNDCLOUD_CLIENT_ID=... python -m train.collect soundcloud --genres metal,pop \
    --per-genre 50 --out data/sc
"""

from .genres import canonical_genres, normalise_genre
from .soundcloud import CSV_COLUMNS, ApiError, SoundCloudClient, collect

__all__ = [
    "CSV_COLUMNS",
    "ApiError",
    "SoundCloudClient",
    "canonical_genres",
    "collect",
    "normalise_genre",
]
