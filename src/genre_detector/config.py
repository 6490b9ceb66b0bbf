"""Every setting of the package in one place: each `GENRE_*` environment variable, its type,
its default and what it means. Read through `settings()`; nothing else reads os.environ for a
GENRE_* variable. The configuration table (docs/configuration.md) is `python -m
genre_detector settings` (tests/test_config.py keeps the two equal).

    from genre_detector.config import settings
    settings().max_upload_bytes        # 52428800 unless GENRE_MAX_UPLOAD_BYTES says otherwise

`settings()` reads the environment when called (0.08 ms), so a process reads each variable
at the moment the setting is used (a service at start-up, a test after monkeypatching it); a
bad value raises ValueError naming the variable. `setting("search_per_min")` reads one field
alone, for what every request does (the budgets).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout (src/genre_detector/config.py)


def _setting(env: str, default, meaning: str, shown: str | None = None, keep_case=False):
    """A field read from `env`; a string value is lower-cased unless keep_case (URLs)."""
    meta = {"env": env, "meaning": meaning, "shown": shown, "keep_case": keep_case}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    data: Path = _setting(
        "GENRE_DATA",
        REPO.parent / "shared" / "data",
        "the training sources, `genre_map.csv` and the test clips",
        shown="`../shared/data`",
    )
    max_upload_bytes: int = _setting(
        "GENRE_MAX_UPLOAD_BYTES", 50 * 2**20, "upload limit (413 above it)"
    )
    max_json_bytes: int = _setting(
        "GENRE_MAX_JSON_BYTES", 16 * 1024, "catalog JSON body limit (413 as the body passes it)"
    )
    max_batch: int = _setting(
        "GENRE_MAX_BATCH",
        80,
        "adaptive batching: most windows per model call (musicnn: 5, one track, from the registry)",
    )
    max_latency_ms: int = _setting(
        "GENRE_MAX_LATENCY_MS", 10000, "adaptive batching latency budget per request"
    )
    feature_threads: int = _setting(
        "GENRE_FEATURE_THREADS", 2, "threads decoding audio and computing features in the front"
    )
    runtime: str = _setting(
        "GENRE_RUNTIME",
        "auto",
        "the model service's runtime: `onnx`, `keras` (needs TensorFlow), or `auto`: ONNX when "
        "every model has its `model.onnx`; the tagger and evaluation always run ONNX",
        shown="`auto` (image: `onnx`)",
    )
    onnx_threads: int = _setting(
        "GENRE_ONNX_THREADS", 0, "intra-op threads per ONNX Runtime session (0: it decides)"
    )
    onnx_spin: bool = _setting(
        "GENRE_ONNX_SPIN",
        False,
        "1 lets idle ONNX Runtime threads spin-wait (its own default; 0 measured 1.4x faster here)",
    )
    tf_threads: int = _setting(
        "GENRE_TF_THREADS", 0, "TensorFlow threads when the service runs Keras (0: it decides)"
    )
    onnx_export: bool = _setting(
        "GENRE_ONNX_EXPORT", True, "0 skips writing `model.onnx` when a model is stored or imported"
    )
    drain_seconds: float = _setting(
        "GENRE_DRAIN_SECONDS", 30.0, "on SIGTERM, the longest wait for accepted requests"
    )
    db_url: str = _setting(
        "GENRE_DB_URL",
        "",
        "the catalog's database: `sqlite:///PATH` (SQLite + sqlite-vec) or `postgresql://...` "
        "(PostgreSQL + pgvector); unset: `catalog.sqlite3` under `BENTOML_HOME`",
        shown="unset",
        keep_case=True,
    )
    webhook_allow_hosts: tuple[str, ...] = _setting(
        "GENRE_WEBHOOK_ALLOW_HOSTS",
        (),
        "comma-separated hosts or networks (`hooks.internal`, `10.2.0.0/16`, `127.0.0.1`) "
        "webhooks may reach although private (http and any port allowed there)",
    )
    webhook_ports: tuple[str, ...] = _setting(
        "GENRE_WEBHOOK_PORTS",
        ("443", "80", "8443"),
        "the ports a webhook URL may name (hosts of GENRE_WEBHOOK_ALLOW_HOSTS: any)",
        shown="`443,80,8443`",
    )
    public_url: str = _setting(
        "GENRE_PUBLIC_URL",
        "http://localhost:3000",
        "the service's address as subscribers reach it (links in webhook bodies)",
        keep_case=True,
    )
    webhook_timeout_s: float = _setting(
        "GENRE_WEBHOOK_TIMEOUT_S",
        15.0,
        "seconds one webhook send may take in all (connect, send, reply)",
    )
    webhook_concurrency: int = _setting(
        "GENRE_WEBHOOK_CONCURRENCY",
        8,
        "webhook sends in flight per worker, shared fairly by account, then by watch",
    )
    webhook_backoff_scale: float = _setting(
        "GENRE_WEBHOOK_BACKOFF_SCALE",
        1.0,
        "multiplies the retry schedule (0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h); tests shorten it",
    )
    webhook_disable_after_s: float = _setting(
        "GENRE_WEBHOOK_DISABLE_AFTER_S",
        5 * 86400.0,
        "a watch whose deliveries keep failing this long is disabled (with the reason)",
    )
    deliver_in_service: bool = _setting(
        "GENRE_DELIVER_IN_SERVICE",
        True,
        "1: the service runs a webhook delivery worker while it is up (`deliver` runs one alone)",
    )
    watch_limit: int = _setting("GENRE_WATCH_LIMIT", 100, "watches per account (403 above it)")
    track_quota: int = _setting("GENRE_TRACK_QUOTA", 10000, "tracks per account (403 above it)")
    search_per_min: int = _setting(
        "GENRE_SEARCH_PER_MIN", 60, "searches per key per minute (a token bucket; 429 when empty)"
    )
    writes_per_min: int = _setting(
        "GENRE_WRITES_PER_MIN", 30, "per key per minute: uploads and track changes; watch changes"
    )
    burst_seconds: float = _setting(
        "GENRE_BURST_SECONDS",
        60.0,
        "most a budget's bucket holds: this many seconds of its rate (at least 10 requests; "
        "60: a whole minute's budget at once)",
    )
    anonymous_per_min: int = _setting(
        "GENRE_ANONYMOUS_PER_MIN", 5, "keyless `POST /similar` per client per minute"
    )
    anonymous_max_k: int = _setting(
        "GENRE_ANONYMOUS_MAX_K", 10, "keyless `POST /similar`: most results (`k`) it may ask for"
    )
    predict_per_min: int = _setting(
        "GENRE_PREDICT_PER_MIN", 0, "`/predict` and `POST /` per client per minute (0: no limit)"
    )
    trusted_proxies: tuple[str, ...] = _setting(
        "GENRE_TRUSTED_PROXIES",
        (),
        "proxies (addresses, networks) whose first `X-Forwarded-For` hop is the client",
    )
    plugins: tuple[str, ...] = _setting(
        "GENRE_PLUGINS", (), "comma-separated modules to import that register more families"
    )

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = os.environ if env is None else env
        s = cls(**{f.name: _value(f, env) for f in dataclasses.fields(cls)})
        if s.runtime not in {"auto", "onnx", "keras"}:
            raise ValueError(f"GENRE_RUNTIME={s.runtime!r}: use onnx, keras or auto")
        return s

    def database_url(self, env=None) -> str:
        """GENRE_DB_URL, or the embedded default: a SQLite file beside the model store."""
        if self.db_url:
            return self.db_url
        env = os.environ if env is None else env
        home = Path(env.get("BENTOML_HOME") or Path.home() / "bentoml")
        return f"sqlite:///{home / 'catalog.sqlite3'}"

    @staticmethod
    def bento_models(env=None) -> Path | None:
        """Inside a built Bento's image, its own model store: BentoML's Dockerfile sets
        BENTO_PATH, and `containerize` puts the packed models in $BENTO_PATH/models (which
        `bentoml serve` reads, while BENTOML_HOME's store stays empty). None elsewhere."""
        env = os.environ if env is None else env
        models = Path(env["BENTO_PATH"]) / "models" if env.get("BENTO_PATH") else None
        return models if models is not None and models.is_dir() else None

    @staticmethod
    def model_ref(name: str, default: str, env=None) -> str:
        """GENRE_MODEL_<NAME>: the store tag serving family `name` (default `default`)."""
        env = os.environ if env is None else env
        return env.get(f"GENRE_MODEL_{name.upper()}") or default


def _parse(name: str, raw: str, default, keep_case: bool = False):
    try:
        if isinstance(default, bool):
            if raw not in {"0", "1"}:
                raise ValueError("use 0 or 1")
            return raw == "1"
        if isinstance(default, tuple):
            return tuple(m.strip() for m in raw.split(",") if m.strip())
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, str):
            return raw if keep_case else raw.lower()
        return type(default)(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r}: {exc}") from None


def settings(env=None) -> Settings:
    """The settings from the environment (os.environ unless `env` is given)."""
    return Settings.from_env(env)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def setting(name: str, env=None):
    """One field of settings(), read and parsed alone: for a path every request takes
    (serve.budgets), where reading all of them (0.08 ms) was a fifth of what a refused
    request costs the service."""
    return _value(_FIELDS[name], os.environ if env is None else env)


def _value(f: dataclasses.Field, env):
    """A field's value: its variable parsed, or its default when unset or blank."""
    raw = (env.get(f.metadata["env"]) or "").strip()
    return _parse(f.metadata["env"], raw, f.default, f.metadata["keep_case"]) if raw else f.default


# GENRE_MODEL_<NAME> is one row of the table, not a field.
MODEL_REF_ROW = (
    "`GENRE_MODEL_<NAME>`",
    "`genre-<name>:latest`",
    "store tag per family (`FEEDFORWARD`, `LENET`, `CNN`, `LSTM`, `MUSICNN`)",
)


def markdown_table() -> str:
    """The configuration table of docs/configuration.md."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        d = f.default
        shown = f.metadata["shown"] or (
            f"`{int(d)}`"
            if isinstance(d, bool)
            else "unset"
            if d == ()
            else f"`{d:g}`"
            if isinstance(d, float)
            else f"`{d}`"
        )
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['meaning']} |")
    rows.append("| " + " | ".join(MODEL_REF_ROW) + " |")
    return "\n".join(rows)
