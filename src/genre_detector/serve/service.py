"""BentoML services: a front service (decode + features + replies) and a model service
whose batchable methods run the models with adaptive batching. The model service is
generated from the registry (genre_detector.models.families): per group of families that share
feature settings one method running them all on one batch (what the default request uses),
and one method per family (for requests that name a subset).

    bentoml serve service:GenreDetector        # from the repository root (see service.py)

The model service runs ONNX Runtime sessions when every served model has its exported
model.onnx (GENRE_RUNTIME=onnx|keras|auto, default auto) and then never imports TensorFlow;
with GENRE_RUNTIME=keras (or a model without model.onnx) it runs the Keras models. The front
never imports TensorFlow. SIGTERM drains (serve.drain): GENRE_DRAIN_SECONDS. What leans on
BentoML's internals is in serve.bentoml_internals.
"""

import asyncio
import gc
import logging
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import numpy as np

from genre_detector.audio.features import FeatureSettings, extract_feature_sets, warm_up
from genre_detector.config import Settings, settings
from genre_detector.errors import GenreError
from genre_detector.models.calibration import Calibration
from genre_detector.models.families import FAMILIES, research_names
from genre_detector.runtime.model_set import batch_cap as family_batch_cap
from genre_detector.runtime.store import (
    CALIBRATION_NAME,
    ModelInfo,
    check_consistent,
    resolve,
    store_name,
)
from genre_detector.scoring.track_result import score_track
from genre_detector.serve.bentoml_internals import (
    add_outermost_middleware,
    outermost_applied,
    unpooled_request_dirs,
    use_loopback_tcp,
)
from genre_detector.serve.budgets import BUDGETS, BudgetGate, client_address
from genre_detector.serve.catalog_routes import (
    GATE_RULES,
    CatalogHandle,
    admit_search,
    admit_upload,
    catalog_app,
    error_headers,
    search_upload,
    start_delivery_thread,
    store_upload,
)
from genre_detector.serve.container_image import IMAGE
from genre_detector.serve.drain import install_drain_handler
from genre_detector.serve.http_boundary import MAX_CONCURRENCY, TARGET_CONCURRENCY, HttpBoundary
from genre_detector.serve.replies import legacy_reply, models_reply, predict_reply
from genre_detector.serve.spectrogram_png import png_data_url

# Adaptive batching, in windows (a 30 s clip is 20 windows, a long track at most 40).
# Chosen from loadtests/benchmark.py: see loadtests/README.md.
SETTINGS = settings()  # read once, when `bentoml serve` imports the service
WEB_DIR = Path(__file__).parent / "web"
logger = logging.getLogger("bentoml.genre_detector")  # a child of bentoml: shown by serve
use_loopback_tcp()  # read by `bentoml serve` after it imports this module
# uvicorn (under `bentoml serve`) replaces the peer of a 127.0.0.1 connection by the last
# X-Forwarded-For hop unless FORWARDED_ALLOW_IPS says otherwise: the client address is
# serve.budgets.client_address's to decide (GENRE_TRUSTED_PROXIES), from the real peer.
os.environ.setdefault("FORWARDED_ALLOW_IPS", "")


def model_ref(name: str) -> str:
    """Store tag used for a model: GENRE_MODEL_<NAME> overrides genre-<name>:latest."""
    return Settings.model_ref(name, f"{store_name(name)}:latest")


def _resolve() -> dict[str, bentoml.models.BentoModel]:
    """Every registered family with a model in the store, pinned to a concrete version so
    every process of the service uses the same models (plus the ensemble's calibration)."""
    found = {}
    for name in [*FAMILIES, "ensemble"]:
        ref = model_ref(name) if name != "ensemble" else f"{CALIBRATION_NAME}:latest"
        try:
            found[name] = bentoml.models.BentoModel(str(resolve(ref).tag))
        except bentoml.exceptions.NotFound:
            if name != "ensemble":
                logger.warning("no %s in the model store: not served", ref)
    if len(found) - ("ensemble" in found) == 0:
        raise bentoml.exceptions.NotFound(
            "no genre models in the BentoML store: run "
            "`make models` (shipped models) or python -m train"
        )
    return found


BENTO_MODELS = _resolve()
SERVED = [n for n in FAMILIES if n in BENTO_MODELS]


def _infos() -> dict[str, ModelInfo]:
    return {n: ModelInfo.from_entry(BENTO_MODELS[n].stored) for n in SERVED}


def _calibration() -> Calibration | None:
    if "ensemble" not in BENTO_MODELS:
        return None
    return Calibration.from_dict(dict(BENTO_MODELS["ensemble"].stored.info.metadata)["calibration"])


INFOS, CALIBRATION = _infos(), _calibration()
LABELS = check_consistent(INFOS, CALIBRATION)  # refuses to start on mixed label lists
# Families grouped by the features they take: one batchable method per group.
GROUPS: dict[FeatureSettings, list[str]] = {}
for _name in SERVED:
    GROUPS.setdefault(INFOS[_name].settings, []).append(_name)
GROUP_METHOD = {s: "group_" + "_".join(names) for s, names in GROUPS.items()}


MODEL_SERVICE_NAME = "genre_models"
# The catalog, opened on its first request (serve.catalog_routes.CatalogHandle): the embedding
# size of a new catalog is the served projection's.
CATALOG = CatalogHandle(
    dim=next((i.projection.dim for i in INFOS.values() if i.projection is not None), None)
)


# A call to the model service whose pooled keep-alive connection the service closed at that
# very moment (uvicorn drops connections idle for 5 s; the front's aiohttp pool keeps them
# for 15 s) fails with a connection error before any work is done: the calls are pure, so
# they are sent again (seen once in a 3-minute soak as an HTTP 500).
MODEL_CALL_ATTEMPTS = 3


async def call_model(method, windows: np.ndarray, attempts: int = MODEL_CALL_ATTEMPTS):
    """await method(windows), again on a dropped connection (at most `attempts` in all)."""
    import aiohttp

    for attempt in range(1, attempts + 1):
        try:
            return await method(windows)
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            if attempt == attempts:
                raise
            logger.warning("model call failed on its connection (%r): sending it again", exc)


def batch_cap(names: list[str]) -> int:
    """Most windows per call of a method running `names`: the smallest of their families'
    caps (runtime.model_set.batch_cap: the registry's, else GENRE_MAX_BATCH)."""
    return min(family_batch_cap(n) for n in names)


def model_runtime() -> str:
    """ "onnx" (ONNX Runtime, no TensorFlow) or "keras". GENRE_RUNTIME=onnx|keras|auto;
    auto (the default): onnx when every served model has its model.onnx."""
    from genre_detector.runtime.onnx_predictor import has_onnx

    wanted = settings().runtime
    if wanted == "keras":
        return "keras"
    missing = [n for n in SERVED if not has_onnx(str(BENTO_MODELS[n].tag))]
    if not missing:
        return "onnx"
    if wanted == "onnx":
        raise RuntimeError(
            f"GENRE_RUNTIME=onnx but {', '.join(missing)} have no model.onnx "
            "in the store: re-import (`make models`) to export them"
        )
    logger.warning(
        "no model.onnx for %s: serving every model with Keras/TensorFlow", ", ".join(missing)
    )
    return "keras"


def freeze_startup_heap() -> None:
    """Collect start-up's garbage, then put what is left (modules, models, sessions, the
    catalog's engine: over 100,000 objects that live as long as the process) out of the
    cyclic collector's reach. Each full collection walked them all with every thread
    stopped: 90-120 ms pauses in the front under load, which requests behind them waited
    out (loadtests/README.md#two-accounts-one-over-its-budget-accounts_loadpy-issue-30)."""
    gc.collect()
    gc.freeze()


def _model_service():
    """The model service class, generated from what is served."""

    def __init__(self) -> None:
        self.runtime = model_runtime()
        if self.runtime == "onnx":
            from genre_detector.runtime.onnx_predictor import OnnxPredictor as Predictor
        else:
            from genre_detector.runtime.keras_predictor import Predictor, limit_threads

            limit_threads()
        self.predictors = {n: Predictor.from_store(str(BENTO_MODELS[n].tag)) for n in SERVED}
        for p in self.predictors.values():  # run once so the first request is fast
            p.warm_up()
        logger.info(
            "model runtime %s for %s (tensorflow imported: %s)",
            self.runtime,
            ", ".join(SERVED),
            "tensorflow" in sys.modules,
        )
        install_drain_handler("model", MODEL_SERVICE_NAME)
        freeze_startup_heap()

    def method(names: list[str], method_name: str):
        def run(self, windows: np.ndarray) -> np.ndarray:
            for n in names:
                logger.info("model %s ran a batch of %d windows", n, len(windows))
            return np.stack([self.predictors[n](windows) for n in names], axis=1)

        run.__name__ = run.__qualname__ = method_name
        run.__doc__ = (
            f"(n, {len(names)}, width): {', '.join(names)} on one batch of windows "
            "(class probabilities, or window features for a track head)."
        )
        return bentoml.api(
            batchable=True, max_batch_size=batch_cap(names), max_latency_ms=SETTINGS.max_latency_ms
        )(run)

    namespace = {
        "__init__": __init__,
        "__doc__": "The served models behind batchable methods "
        "(generated from genre_detector.models.families).",
    }
    for n in SERVED:
        namespace[f"{n}_model"] = BENTO_MODELS[n]  # declares the models the Bento packs
        namespace[n] = method([n], n)
    if "ensemble" in BENTO_MODELS:
        namespace["ensemble_calibration"] = BENTO_MODELS["ensemble"]
    for s, names in GROUPS.items():
        if len(names) > 1:
            namespace[GROUP_METHOD[s]] = method(names, GROUP_METHOD[s])
    # BentoML's default recycles the front's connection to this service every 100 calls /
    # 300 s by closing it, which aborted calls in flight (HTTP 500 under load): keep it open.
    return bentoml.service(
        name=MODEL_SERVICE_NAME,
        workers=1,
        traffic={"timeout": 120},
        runner_connection={"max_requests": 2**31 - 1, "max_age": 1e9},
    )(type("GenreModels", (), namespace))


GenreModels = _model_service()


def _error(ctx: bentoml.Context, exc: GenreError) -> dict:
    ctx.response.status_code = exc.status
    return exc.body()


def _catalog_error(ctx: bentoml.Context, exc: GenreError) -> dict:
    ctx.response.headers.update(error_headers(exc, ctx.request.headers.get("authorization")))
    return _error(ctx, exc)


def _predict_budget(ctx: bentoml.Context) -> dict | None:
    """GENRE_PREDICT_PER_MIN per client address on /predict and POST / (0: open): None to go
    on, or the 429 reply."""
    verdict = BUDGETS.take("predict", client_address(ctx.request.scope))
    ctx.response.headers.update(verdict.headers())
    return None if verdict.ok else _catalog_error(ctx, verdict.error())


def _models_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    reply = models_reply(INFOS, CALIBRATION)

    async def models(_request):
        return JSONResponse(reply)

    return Starlette(routes=[Route("/", models, methods=["GET"])])


def _ui_app():
    from genre_detector.serve.web_page import page_app

    return page_app(WEB_DIR)  # StaticFiles with the page's Content-Security-Policy


@bentoml.service(
    name="genre_detector",
    image=IMAGE,
    workers=1,
    traffic={"timeout": 120, "max_concurrency": MAX_CONCURRENCY, "concurrency": TARGET_CONCURRENCY},
    http={"cors": {"enabled": False}},
)
@bentoml.asgi_app(catalog_app(CATALOG, LABELS), path="")
@bentoml.asgi_app(_models_app(), path="/models")
@bentoml.asgi_app(_ui_app(), path="/ui")
class GenreDetector:
    """Decodes uploads once, computes the windows every model needs, fans out to the models."""

    models = bentoml.depends(GenreModels)

    def __init__(self) -> None:
        from threadpoolctl import threadpool_limits

        self.catalog = CATALOG
        if SETTINGS.deliver_in_service:
            start_delivery_thread(CATALOG)
        # One BLAS thread: the mel projection is tiny, and threads only contend with the models.
        threadpool_limits(1)
        self.infos = INFOS
        self.pool = ThreadPoolExecutor(SETTINGS.feature_threads, thread_name_prefix="features")
        # The mel bases and soxr's first call: now, not in a request.
        warm_up(list(GROUPS))
        install_drain_handler("front", MODEL_SERVICE_NAME)
        if not unpooled_request_dirs():
            logger.warning("BentoML's request folder pool not found: folders may stay in TMPDIR")
        if not outermost_applied(GenreDetector.name):
            logger.warning("BudgetGate is not around the app: a 429 costs what a request does")
        freeze_startup_heap()

    async def _run_models(self, windows: dict, models: list[str]) -> dict[str, np.ndarray]:
        """One call per feature group when the request wants the whole group, else one per
        model; all concurrently."""
        calls, names = [], []
        for s, group in GROUPS.items():
            wanted = [n for n in group if n in models]
            if not wanted:
                continue
            if len(wanted) == len(group) and len(group) > 1:
                calls.append(call_model(getattr(self.models.to_async, GROUP_METHOD[s]), windows[s]))
                names.append(group)
            else:
                for n in wanted:
                    calls.append(call_model(getattr(self.models.to_async, n), windows[s]))
                    names.append([n])
        probs = {}
        for group, out in zip(names, await asyncio.gather(*calls)):
            out = np.asarray(out)
            probs.update({n: out[:, k] for k, n in enumerate(group)})
        return {n: probs[n] for n in models}

    async def _score(self, audio: Path | None, field: str, models: list[str], extra=()):
        """The upload scored by every model in `models` (score_track, as everywhere):
        (batches, TrackResult). GenreError for a missing file, an unknown model or audio
        that cannot be used. `extra`: more feature settings to compute (the picture's)."""
        if audio is None:
            raise GenreError(
                "missing_file", f"send the audio file as multipart/form-data field '{field}'"
            )
        unknown = [m for m in models if m not in self.infos]
        if unknown:
            raise GenreError(
                "unknown_model",
                f"unknown model(s) {', '.join(unknown)}; valid names: {', '.join(self.infos)}",
            )
        needed = list(dict.fromkeys([*(self.infos[m].settings for m in models), *extra]))
        loop = asyncio.get_running_loop()
        batches = await loop.run_in_executor(
            self.pool, extract_feature_sets, Path(audio).read_bytes(), needed
        )
        probs = await self._run_models({s: b.windows for s, b in batches.items()}, models)
        return batches, score_track(batches, probs, self.infos, CALIBRATION)

    async def _analyse(
        self,
        ctx: bentoml.Context,
        audio: Path | None,
        field: str,
        models: list[str],
        spectrogram: bool = False,
    ) -> dict:
        extra = []
        if spectrogram and not any(self.infos[m].settings.scale == "db" for m in models):
            extra.append(FeatureSettings())  # the picture is drawn in dB
        try:
            batches, result = await self._score(audio, field, models, extra)
        except GenreError as exc:  # AudioError is one
            return _error(ctx, exc)
        reply = predict_reply(result, uuid.uuid4().hex[:16], self.infos, CALIBRATION)
        if spectrogram:
            s = next(s for s in batches if s.scale == "db")
            reply["spectrogram_png"] = png_data_url(batches[s].mel, s.floor)
        return reply

    async def _embedding(self, audio: Path | None):
        """(TrackResult, projection) of an upload scored by every served model: what the
        catalog stores and searches with."""
        name = next((n for n in SERVED if self.infos[n].projection is not None), None)
        if name is None:
            raise GenreError(
                "catalog_unavailable",
                "the served models carry no search projection: re-import them (make models)",
            )
        _, result = await self._score(audio, "audio", list(SERVED))
        return result, self.infos[name].projection

    @bentoml.api(route="/predict")
    # `audio: Path = None`, not Optional[Path]: BentoML 1.4 then treats it as a file field,
    # and a missing field arrives as None so the reply can name it.
    async def predict(
        self,
        ctx: bentoml.Context,
        audio: Path = None,  # type: ignore[assignment]
        models: str = ",".join(SERVED),
        spectrogram: bool = False,
    ) -> dict:
        """Genre probabilities of every model, the ensemble and a timeline for one track.

        multipart field `audio`; optional `models` (comma-separated subset of the served
        models, see GET /models) and `spectrogram=true` for a PNG of the log-mel.
        """
        if (refused := _predict_budget(ctx)) is not None:
            return refused
        query = ctx.request.query_params  # the options work as query parameters too
        models = query.get("models", models)
        spectrogram = query.get("spectrogram", str(spectrogram)).lower() in {"1", "true", "yes"}
        names = [m.strip() for m in models.split(",") if m.strip()] or list(SERVED)
        return await self._analyse(ctx, audio, "audio", names, spectrogram)

    @bentoml.api(route="/")
    async def legacy(self, ctx: bentoml.Context, audio_file: Path = None) -> dict:  # type: ignore[assignment]
        """The research prototype's API (multipart field `audio_file`), for its React page."""
        if (refused := _predict_budget(ctx)) is not None:
            return refused
        reply = await self._analyse(ctx, audio_file, "audio_file", list(research_names()))
        return reply if "error" in reply else legacy_reply(reply)

    @bentoml.api(route="/tracks")
    async def add_track(
        self,
        ctx: bentoml.Context,
        audio: Path = None,  # type: ignore[assignment]
        title: str = "",
        artist: str = "",
        consent: str = "",
    ) -> dict:
        """Add a track to your catalog (`Authorization: Bearer KEY`, consent=search[,notify]):
        scored as /predict scores it and stored with its embedding (the audio itself is
        not stored): 201 and the track, or 200 and the same track for audio added before."""
        fields = {"title": title, "artist": artist, "consent": consent}
        fields.update({k: v for k, v in ctx.request.query_params.items() if k in fields})
        if audio is None:
            return _error(ctx, GenreError("missing_file", "send the track as field 'audio'"))
        try:
            admitted, known = await admit_upload(  # key, upload budget, consent, duplicate
                self.catalog,
                ctx.request.headers.get("authorization"),
                fields,
                Path(audio).read_bytes(),
            )
            if admitted is None:  # this account has this audio already
                status, body = known
            else:
                result, projection = await self._embedding(audio)
                status, body = await store_upload(self.catalog, admitted, result, projection)
        except GenreError as exc:
            return _catalog_error(ctx, exc)
        ctx.response.status_code = status
        return body

    @bentoml.api(route="/similar")
    async def similar(self, ctx: bentoml.Context, audio: Path = None) -> dict:  # type: ignore[assignment]
        """Tracks in the catalog that sound like the uploaded clip (which is not stored):
        query parameters k (1-100), genre, exclude_same_artist (default true), min_score."""
        if audio is None:
            return _error(ctx, GenreError("missing_file", "send the clip as field 'audio'"))
        request = ctx.request
        try:
            opts, verdict = await admit_search(
                self.catalog,
                request.query_params,
                LABELS,
                request.headers.get("authorization"),
                request.scope,
            )
            ctx.response.headers.update(verdict.headers())
            result, projection = await self._embedding(audio)
            data = Path(audio).read_bytes()
            return await search_upload(self.catalog, opts, data, result, projection)
        except GenreError as exc:
            return _catalog_error(ctx, exc)


GenreDetector.add_asgi_middleware(
    HttpBoundary,
    file_fields={"/predict": "audio", "/": "audio_file", "/tracks": "audio", "/similar": "audio"},
)
# Outside everything, BentoML's metrics, tracing and access log included: a request whose
# budget is already spent is answered 429 from its headers alone.
add_outermost_middleware(GenreDetector.name, BudgetGate, rules=GATE_RULES)
