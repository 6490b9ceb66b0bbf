"""genre_detector: music-genre detection from audio with four Keras models served by BentoML.

Stages, one module each: audio (decode) -> features (log-mel windows) -> architectures
(the four model families) -> store (BentoML model store) -> predict (track/ensemble results).
"""

__version__ = "0.1.0"
