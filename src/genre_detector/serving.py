"""BentoML services: a front service (decode + features + replies) and a model service
whose batchable methods run the Keras models with adaptive batching: `all_models` (all four
on one batch, used when a request wants all four) and one method per model (for subsets).

    bentoml serve service:GenreDetector        # from the repository root (see service.py)

TensorFlow is imported only in the model service process, so the front stays light.
"""

import asyncio
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import numpy as np

from .audio import SAMPLE_RATE, AudioError
from .features import extract_windows
from .http_boundary import HttpBoundary
from .names import MODEL_NAMES
from .replies import legacy_reply, models_reply, predict_reply
from .spectrogram_png import png_data_url
from .store import ModelInfo, store_name

# Adaptive batching, in windows (a 30 s clip is 20 windows, a long track at most 40).
# Chosen from loadtests/benchmark.py: see README "Tuning".
MAX_BATCH_WINDOWS = int(os.environ.get("GENRE_MAX_BATCH", "80"))
MAX_LATENCY_MS = int(os.environ.get("GENRE_MAX_LATENCY_MS", "10000"))
FEATURE_THREADS = int(os.environ.get("GENRE_FEATURE_THREADS", "2"))
WEB_DIR = Path(__file__).parent / "web"


def model_ref(name: str) -> str:
    """Store tag used for a model: GENRE_MODEL_<NAME> overrides genre-<name>:latest."""
    return os.environ.get(f"GENRE_MODEL_{name.upper()}", f"{store_name(name)}:latest")


# Resolved to concrete versions once, so every process of the service uses the same models.
BENTO_MODELS = {name: bentoml.models.BentoModel(str(bentoml.models.get(model_ref(name)).tag))
                for name in MODEL_NAMES}


def _infos() -> dict[str, ModelInfo]:
    return {n: ModelInfo.from_metadata(dict(m.stored.info.metadata), str(m.stored.tag))
            for n, m in BENTO_MODELS.items()}


logger = logging.getLogger("bentoml.genre_detector")  # a child of bentoml: shown by serve


def _run(predictors: dict, name: str, windows: np.ndarray) -> np.ndarray:
    logger.info("model %s ran a batch of %d windows", name, len(windows))
    return predictors[name](windows)


# BentoML's default recycles the front's connection to this service every 100 calls / 300 s
# by closing it, which aborted calls in flight (HTTP 500 under load): keep it open instead.
@bentoml.service(name="genre_models", workers=1, traffic={"timeout": 120},
                 runner_connection={"max_requests": 2**31 - 1, "max_age": 1e9})
class GenreModels:
    """The four Keras models behind batchable methods: all four at once, or one each."""

    feedforward_model = BENTO_MODELS["feedforward"]
    lenet_model = BENTO_MODELS["lenet"]
    cnn_model = BENTO_MODELS["cnn"]
    lstm_model = BENTO_MODELS["lstm"]

    def __init__(self) -> None:
        from .inference import Predictor, limit_threads
        limit_threads()
        self.predictors = {n: Predictor.from_store(str(m.tag)) for n, m in BENTO_MODELS.items()}
        for p in self.predictors.values():   # trace once so the first request is fast
            p(np.zeros((1, p.info.settings.n_mels, p.info.settings.window_frames), np.float32))

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_WINDOWS, max_latency_ms=MAX_LATENCY_MS)
    def all_models(self, windows: np.ndarray) -> np.ndarray:
        """(n, 4, n_classes): the four models (MODEL_NAMES order) on one batch. A request that
        wants all four makes one call and waits in one queue instead of four."""
        return np.stack([_run(self.predictors, n, windows) for n in MODEL_NAMES], axis=1)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_WINDOWS, max_latency_ms=MAX_LATENCY_MS)
    def feedforward(self, windows: np.ndarray) -> np.ndarray:
        return _run(self.predictors, "feedforward", windows)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_WINDOWS, max_latency_ms=MAX_LATENCY_MS)
    def lenet(self, windows: np.ndarray) -> np.ndarray:
        return _run(self.predictors, "lenet", windows)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_WINDOWS, max_latency_ms=MAX_LATENCY_MS)
    def cnn(self, windows: np.ndarray) -> np.ndarray:
        return _run(self.predictors, "cnn", windows)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_WINDOWS, max_latency_ms=MAX_LATENCY_MS)
    def lstm(self, windows: np.ndarray) -> np.ndarray:
        return _run(self.predictors, "lstm", windows)


def _error(ctx: bentoml.Context, status: int, code: str, detail: str) -> dict:
    ctx.response.status_code = status
    return {"error": code, "detail": detail}


def _models_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    reply = models_reply(_infos())

    async def models(_request):
        return JSONResponse(reply)
    return Starlette(routes=[Route("/", models, methods=["GET"])])


def _ui_app():
    from starlette.staticfiles import StaticFiles
    return StaticFiles(directory=WEB_DIR, html=True)


@bentoml.service(name="genre_detector", workers=1,
                 traffic={"timeout": 120, "max_concurrency": 64},
                 http={"cors": {"enabled": False}})
@bentoml.asgi_app(_models_app(), path="/models")
@bentoml.asgi_app(_ui_app(), path="/ui")
class GenreDetector:
    """Decodes uploads, computes log-mel windows, fans out to the four models."""

    models = bentoml.depends(GenreModels)

    def __init__(self) -> None:
        from threadpoolctl import threadpool_limits
        # One BLAS thread: the mel projection is tiny, and threads only contend with TF.
        threadpool_limits(1)
        self.infos = _infos()
        self.settings = next(iter(self.infos.values())).settings
        self.pool = ThreadPoolExecutor(FEATURE_THREADS, thread_name_prefix="features")
        # librosa/numba compile on first use (~seconds): do it now, not in a request.
        extract_windows(np.random.default_rng(0).standard_normal(SAMPLE_RATE * 4)
                        .astype(np.float32) * 0.1, self.settings)

    async def _analyse(self, ctx: bentoml.Context, audio: Path | None, field: str,
                       models: list[str], spectrogram: bool = False) -> dict:
        if audio is None:
            return _error(ctx, 400, "missing_file", f"send the audio file as multipart/form-data "
                          f"field '{field}'")
        unknown = [m for m in models if m not in self.infos]
        if unknown:
            return _error(ctx, 400, "unknown_model", f"unknown model(s) {', '.join(unknown)}; "
                          f"valid names: {', '.join(self.infos)}")
        loop = asyncio.get_running_loop()
        try:
            batch = await loop.run_in_executor(self.pool, extract_windows,
                                               Path(audio).read_bytes(), self.settings)
        except AudioError as exc:
            status = 415 if exc.reason in AudioError.UNDECODABLE else 422
            return _error(ctx, status, exc.reason, exc.detail)
        if set(models) == set(MODEL_NAMES):
            stacked = np.asarray(await self.models.to_async.all_models(batch.windows))
            probs = {m: stacked[:, MODEL_NAMES.index(m)] for m in models}
        else:
            outputs = await asyncio.gather(*(getattr(self.models.to_async, m)(batch.windows)
                                             for m in models))
            probs = dict(zip(models, map(np.asarray, outputs)))
        reply = predict_reply(batch, probs,
                              self.infos, uuid.uuid4().hex[:16], SAMPLE_RATE)
        if spectrogram:
            reply["spectrogram_png"] = png_data_url(batch.mel, -self.settings.top_db)
        return reply

    @bentoml.api(route="/predict")
    # `audio: Path = None`, not Optional[Path]: BentoML 1.4 then treats it as a file field,
    # and a missing field arrives as None so the reply can name it.
    async def predict(self, ctx: bentoml.Context, audio: Path = None,  # type: ignore[assignment]
                      models: str = ",".join(MODEL_NAMES), spectrogram: bool = False) -> dict:
        """Genre probabilities of every model, the ensemble and a timeline for one track.

        multipart field `audio`; optional `models` (comma-separated subset of
        feedforward,lenet,cnn,lstm) and `spectrogram=true` for a PNG of the log-mel.
        """
        query = ctx.request.query_params          # the options work as query parameters too
        models = query.get("models", models)
        spectrogram = query.get("spectrogram", str(spectrogram)).lower() in {"1", "true", "yes"}
        names = [m.strip() for m in models.split(",") if m.strip()] or list(MODEL_NAMES)
        return await self._analyse(ctx, audio, "audio", names, spectrogram)

    @bentoml.api(route="/")
    async def legacy(self, ctx: bentoml.Context,
                     audio_file: Path = None) -> dict:  # type: ignore[assignment]
        """The research prototype's API (multipart field `audio_file`), for its React page."""
        reply = await self._analyse(ctx, audio_file, "audio_file", list(MODEL_NAMES))
        return reply if "error" in reply else legacy_reply(reply)


GenreDetector.add_asgi_middleware(HttpBoundary, file_fields={"/predict": "audio", "/": "audio_file"})
