"""BentoML entry point: `bentoml serve service:GenreDetector` (or `make serve`).

The services live in src/genre_detector/serve/service.py; this file only makes them importable
from a checkout or a built Bento.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from genre_detector.serve.service import GenreDetector, GenreModels  # noqa: E402,F401
