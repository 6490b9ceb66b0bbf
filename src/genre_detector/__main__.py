"""The command line: label a library of music files, and run the catalog's chores.

    python -m genre_detector tag MUSIC/ --out tags.csv          # or tags.jsonl, tags.parquet
    python -m genre_detector tag MUSIC/ --out tags.csv --url http://host:3000 --resume
    python -m genre_detector tag MUSIC/ --out tags.csv --engine ray [--address auto]
    python -m genre_detector tag MUSIC/ --out tags.csv --catalog default --owner label-a \\
        --consent search,notify                            # also store every track in the catalog
    python -m genre_detector keys create NAME   # an API key for account NAME, shown once
    python -m genre_detector keys list | keys revoke KEY_ID
    python -m genre_detector catalog demo      # the shared clips into the local catalog
    python -m genre_detector catalog reindex   # re-embed after the projection changed
    python -m genre_detector deliver           # send the watches' webhooks (a worker)
    python -m genre_detector settings          # every GENRE_* variable (the README's table)

A library is a folder or bucket of music files; the catalog is the database of consented
tracks (GENRE_DB_URL). `python -m genre_detector COMMAND --help` tells each command's options.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m genre_detector",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    _tag_parser(sub)
    _keys_parser(sub)
    _catalog_parser(sub)
    d = sub.add_parser("deliver", help="run a webhook delivery worker (several may run)")
    d.add_argument("--once", action="store_true", help="send what is due now, then exit")
    d.set_defaults(run=_deliver)
    sub.add_parser(
        "settings", help="print every GENRE_* variable with its default and meaning (Markdown)"
    ).set_defaults(run=_settings)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


# ---------------------------------------------------------------- tag


def _tag_parser(sub) -> None:
    t = sub.add_parser(
        "tag",
        help="label every audio file of a library (folders, files or bucket URIs) into a "
        "CSV/JSONL file or Parquet folder",
        description="Label every audio file of a library (the PATHs: folders, files, s3:// or "
        "gs:// URIs) with every stored model and their calibrated ensemble; one row per track "
        "in --out. More: docs/tagging.md.",
    )
    t.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="the library: audio files, folders or bucket URIs (walked recursively, in "
        "sorted order)",
    )
    _output_options(t.add_argument_group("output"))
    _run_options(t.add_argument_group("which tracks, a check, the compute floor"))
    _local_options(t.add_argument_group("engines: in-process (default) or through services"))
    _ray_options(t.add_argument_group("engine: Ray (--engine ray)"))
    _catalog_options(t.add_argument_group("catalog: also store the tracks"))
    t.set_defaults(run=_tag, usage_error=t.error)


def _output_options(g) -> None:
    from genre_detector.batch.writers import PARQUET_ROWS  # light: no models, no ONNX Runtime

    g.add_argument(
        "--out",
        help="output file: .csv (one column per value) or .jsonl (one JSON object per line); "
        "or a .parquet folder of part files (part-00000.parquet, ...; the CSV's columns, "
        "typed) for large runs; required unless --profile",
    )
    g.add_argument(
        "--parquet-rows",
        type=int,
        default=PARQUET_ROWS,
        metavar="N",
        help="with --out NAME.parquet: rows per part file; a part is written when full, so a "
        f"hard kill loses at most N rows (Ctrl-C loses none) (default: {PARQUET_ROWS})",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: keep the rows already in --out, skip their paths, "
        "append the rest",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start --out afresh if it exists (without --resume or this, an existing "
        "non-empty --out is an error)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_options(g) -> None:
    g.add_argument(
        "--shard",
        metavar="I/N",
        help="tag only shard I of N (1 <= I <= N): a track's shard is 1 + sha1(path relative "
        "to its PATH argument) mod N, the same on every machine (for runs that share nothing: "
        "machines without a common cluster, or several Ray clusters/jobs; one Ray cluster "
        "splits the work itself)",
    )
    g.add_argument(
        "--labels-from-folders",
        action="store_true",
        help="treat each file's parent folder as its true genre and print the accuracy of "
        "every model and the ensemble at the end",
    )
    g.add_argument(
        "--profile",
        action="store_true",
        help="write nothing: measure the in-process compute floor on these files "
        "(decode+features in the worker pool, each model at its best batch size) "
        "and print seconds per stage; keeps all windows in memory, use a sample",
    )


def _local_options(g) -> None:
    cpus = os.cpu_count() or 1
    g.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="URL",
        help="tag through running services (http://host:3000) instead of in-process; repeat "
        "it or separate by commas to spread tracks round-robin",
    )
    g.add_argument(
        "--per-url",
        type=int,
        default=4,
        metavar="N",
        help="with --url: requests in flight per service (default: 4)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=cpus,
        metavar="N",
        help="in-process: decoding processes; --engine ray: the local Ray's CPUs "
        f"(default: number of CPUs, {cpus})",
    )
    g.add_argument(
        "--batch-windows",
        type=int,
        default=512,
        metavar="N",
        help="in-process and --engine ray: windows of consecutive tracks gathered into one "
        "model call (default: 512)",
    )
    g.add_argument(
        "--models",
        metavar="TAGS",
        help="in-process and --engine ray: comma-separated model-store tags "
        "(default: genre-<family>:latest of every registered family in the store)",
    )


def _ray_options(g) -> None:
    g.add_argument(
        "--engine",
        choices=("inprocess", "ray"),
        default="inprocess",
        help="inprocess (default): decoding processes + the models in this process; ray: Ray "
        "Data decoding tasks + a model actor pool, on a local Ray or the cluster at --address",
    )
    g.add_argument(
        "--address",
        metavar="ADDR",
        help="join this running Ray cluster ('auto', 'ray://head:10001'); default: start a "
        "local Ray with --workers CPUs",
    )
    g.add_argument(
        "--model-actors",
        type=int,
        default=1,
        metavar="N",
        help="model actors, each loading the models once (default: 1)",
    )
    g.add_argument(
        "--model-cpus",
        type=float,
        metavar="X",
        help="CPUs each model actor reserves, also its ONNX Runtime threads; 0 = reserve none, "
        "GENRE_ONNX_THREADS' threads (default: 0 on a local Ray, as in-process; 1 with "
        "--address)",
    )
    g.add_argument(
        "--decode-cpus",
        type=float,
        default=1.0,
        metavar="X",
        help="CPUs each decoding task reserves (default: 1)",
    )


def _catalog_options(g) -> None:
    g.add_argument(
        "--catalog",
        metavar="DB_URL",
        help="also store every track in this catalog database (sqlite:///PATH or "
        "postgresql://...; `default`: GENRE_DB_URL or the service's embedded one), owned by "
        "--owner, with --consent; audio already there is skipped, so --resume is safe",
    )
    g.add_argument("--owner", default="", help="with --catalog: the account the tracks belong to")
    g.add_argument(
        "--consent",
        default="",
        help="with --catalog: the owner's consent, search or search,notify (required: nothing "
        "enters the catalog without it)",
    )


def _tag(args) -> int:
    from genre_detector.batch import tagger

    refs = (
        [r.strip() for r in args.models.split(",") if r.strip()]
        if args.models
        else tagger.DEFAULT_REFS
    )
    if args.profile:
        from genre_detector.batch.floor import measure_floor

        print(measure_floor(args.paths, refs, args.workers))
        return 0
    try:
        options = _tag_options(args)
        summary, stats = tagger.tag_library(args.paths, args.out, refs=refs, **options)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: every row in {args.out} is complete; run the same command "
            "with --resume to continue",
            file=sys.stderr,
        )
        return 130
    except (FileExistsError, FileNotFoundError, LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.report(summary.seconds))
    print(stats)
    return 0


def _tag_options(args) -> dict:
    """tag_library's keyword arguments from the command line; usage errors exit here."""
    from genre_detector.batch import library, tagger

    urls = [u.strip() for arg in args.url for u in arg.split(",") if u.strip()]
    if urls and args.engine == "ray":
        args.usage_error("--url tags through services; it does not combine with --engine ray")
    if not args.out:
        args.usage_error("tag needs --out FILE.csv, FILE.jsonl or FOLDER.parquet (or --profile)")
    if args.parquet_rows < 1:
        args.usage_error("--parquet-rows must be at least 1")
    if args.catalog and not args.owner:
        args.usage_error("--catalog needs --owner NAME (the account the tracks belong to)")
    ray = {k: getattr(args, k) for k in ("address", "model_actors", "model_cpus", "decode_cpus")}
    return {
        "urls": urls,
        "workers": args.workers,
        "batch_windows": args.batch_windows,
        "per_url": args.per_url,
        "resume": args.resume,
        "overwrite": args.overwrite,
        "shard": library.parse_shard(args.shard) if args.shard else None,
        "labels_from_folders": args.labels_from_folders,
        "progress": not args.no_progress,
        "ray": ray if args.engine == "ray" else None,
        "parquet_rows": args.parquet_rows,
        "catalog": tagger.CatalogTarget(_db_url(args.catalog), args.owner, args.consent)
        if args.catalog
        else None,
    }


def _db_url(flag: str = "default") -> str:
    """The catalog database: GENRE_DB_URL (or the embedded one) for `default`, else `flag`."""
    from genre_detector.config import settings

    return settings().database_url() if flag == "default" else flag


# ---------------------------------------------------------------- keys, catalog, deliver


def _keys_parser(sub) -> None:
    k = sub.add_parser("keys", help="API keys of the catalog (GENRE_DB_URL)")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="a new key for account NAME: printed once, stored hashed")
    kc.add_argument("name", help="the account (owner) the key acts for")
    ksub.add_parser("list", help="keys: id, account, prefix, created, revoked (no secrets)")
    kr = ksub.add_parser("revoke", help="revoke a key by its id (see keys list)")
    kr.add_argument("key_id")
    k.set_defaults(run=_keys)


def _keys(args) -> int:
    from genre_detector.catalog import keys
    from genre_detector.catalog.db import Catalog, CatalogUnavailable

    try:
        db = Catalog.open(_db_url())
        if args.keys_command == "create":
            key = keys.create(db, args.name)
            print(f"key for {key.owner} (id {key.id}); shown only now, store it safely:")
            print(key.secret)
        elif args.keys_command == "list":
            for k in keys.listing(db):
                state = f"revoked {k['revoked_at']:%Y-%m-%d}" if k["revoked_at"] else "active"
                print(f"{k['id']}  {k['owner']:<24} {k['prefix']}...  {state}")
        elif not keys.revoke(db, args.key_id):
            print(f"error: no active key {args.key_id}", file=sys.stderr)
            return 2
    except (CatalogUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _catalog_parser(sub) -> None:
    c = sub.add_parser("catalog", help="the catalog database (GENRE_DB_URL)")
    csub = c.add_subparsers(dest="catalog_command", required=True)
    cd = csub.add_parser("demo", help="fill the catalog with the shared clips (owner demo)")
    cd.add_argument(
        "--data", default=None, help="folder of sources with tracks.csv (default: GENRE_DATA)"
    )
    cd.add_argument("--limit", type=int, default=None, help="at most this many clips")
    cd.add_argument("--workers", type=int, default=None, help="decoding processes")
    cd.set_defaults(run=_catalog_demo)
    csub.add_parser(
        "reindex",
        help="re-embed tracks made by another projection than the stored musicnn model's, "
        "and fill the mood, GEMS, voice and instruments of tracks stored without them",
    ).set_defaults(run=_catalog_reindex)


def _catalog_demo(args) -> int:
    import tempfile
    from pathlib import Path

    from genre_detector.batch import tagger
    from genre_detector.catalog.db import CatalogUnavailable
    from genre_detector.catalog.demo import track_names
    from genre_detector.config import settings

    url = _db_url()
    try:
        names = track_names(Path(args.data) if args.data else settings().data)
        if not names:
            print("error: no <source>/tracks.csv under the data folder", file=sys.stderr)
            return 2
        paths = sorted(names)[: args.limit] if args.limit else sorted(names)
        target = tagger.CatalogTarget(url, "demo", "search,notify", names)
        with tempfile.TemporaryDirectory(prefix="genre-demo-") as tmp:
            summary, _ = tagger.tag_library(
                paths, str(Path(tmp) / "demo.csv"), workers=args.workers, catalog=target
            )
    except (CatalogUnavailable, LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.report(summary.seconds))
    print(f"catalog: {url}")
    return 0


def _catalog_reindex(args) -> int:
    from genre_detector.catalog import tracks
    from genre_detector.catalog.db import Catalog, CatalogUnavailable
    from genre_detector.runtime.store import ModelInfo, resolve

    url = _db_url()
    try:
        info = ModelInfo.from_entry(resolve("musicnn"))
        projection = info.projection
        if projection is None:
            print("error: the stored musicnn model has no projection", file=sys.stderr)
            return 2
        db = Catalog.open(url, dim=projection.dim)
        n = tracks.reindex(db, projection)
        filled = tracks.fill_moods(db, info.moods) if info.moods is not None else 0
        rewritten = tracks.refill_descriptor_columns(db)
    except (CatalogUnavailable, LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"re-embedded {n} tracks with projection {projection.version} ({url})")
    print(f"filled mood, GEMS, voice and instruments of {filled} tracks")
    print(f"filter columns (tempo, key, mood, voice) rewritten for {rewritten} tracks")
    return 0


def _deliver(args) -> int:
    import logging
    import signal
    import threading

    from genre_detector.catalog.db import Catalog, CatalogUnavailable
    from genre_detector.catalog.delivery import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        worker = Worker(Catalog.open(_db_url()))
        if args.once:
            total = 0
            while (n := worker.run_once()) > 0:
                total += n
            print(f"sent {total} webhook(s)")
            return 0
    except CatalogUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"delivery worker {worker.name}: running (Ctrl-C stops after the current batch)")
    worker.run(stop)
    return 0


def _settings(args) -> int:
    from genre_detector.config import markdown_table

    print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
