"""The serving image's recipe: Debian slim plus the Python packages of bentofile.yaml (which
BentoML adds to this image when it builds). Nothing from apt.

BentoML's own Debian recipe starts every image with `apt-get install build-essential git`
(about 650 MB) so that pip can compile source packages. Every package this service installs
ships a manylinux wheel, so this recipe names its base image itself and takes a distro name
outside BentoML's table, which leaves that step out (`_bentoml_sdk.images.Image` inserts
it only for the distros it knows). Decoding needs no system package either: the soundfile
wheel bundles libsndfile (WAV, FLAC, OGG, MP3, AU, AIFF) and the av wheel FFmpeg's decoders
(M4A/AAC and the rest), where Debian's ffmpeg package alone added about 690 MB.
BentoCloud builds from the same recipe (the Bento's bento.yaml `image:`).
"""

from __future__ import annotations

import bentoml

BASE_IMAGE = "python:3.11-slim"

IMAGE = bentoml.images.Image(base_image=BASE_IMAGE, distro="debian-slim", python_version="3.11")
