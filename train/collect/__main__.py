"""Command line for building training sets from public music APIs.

export SOUNDCLOUD_CLIENT_ID=...        # your SoundCloud API client id
python -m train.collect soundcloud --genres metal,pop,hiphop --per-genre 100 --out data/soundcloud
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .genres import TOKENS_CSV, canonical_genres, normalise_genre
from .soundcloud import DEFAULT_API_BASE, ApiError, SoundCloudClient, collect

CLIENT_ID_ENV = "SOUNDCLOUD_CLIENT_ID"
API_BASE_ENV = "SOUNDCLOUD_API_BASE"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.collect", description=__doc__.strip().splitlines()[0]
    )
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    sc = sub.add_parser(
        "soundcloud",
        help="downloadable, genre-tagged tracks from SoundCloud's public API",
        description=f"Search SoundCloud genre by genre and download tracks into OUT/GENRE/, "
        f"with metadata in OUT/tracks.csv. Needs ${CLIENT_ID_ENV}. Reruns keep "
        f"what is there and fetch only what is missing.",
    )
    sc.add_argument(
        "--genres",
        required=True,
        help="comma-separated genres to collect, each a canonical genre or a tag that "
        f"maps to one (canonical: {', '.join(canonical_genres())}); "
        "the text is also the search term",
    )
    sc.add_argument(
        "--per-genre",
        type=positive_int,
        required=True,
        help="tracks wanted per genre, counting ones already in OUT",
    )
    sc.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: OUT/GENRE/<track id>.<ext> and OUT/tracks.csv",
    )
    sc.add_argument(
        "--api-base",
        default=os.environ.get(API_BASE_ENV) or DEFAULT_API_BASE,
        help=f"API base URL (env ${API_BASE_ENV}; default: %(default)s)",
    )
    sc.add_argument(
        "--license",
        default="",
        help="comma-separated licenses to keep, e.g. cc-by,cc-by-sa; an entry ending "
        "in '-' or '*' is a prefix (cc- keeps every Creative Commons license); "
        "empty (the default) keeps all",
    )
    sc.add_argument(
        "--max-rps",
        type=float,
        default=2.0,
        help="most requests per second, 0 = unlimited (default: %(default)s)",
    )
    sc.add_argument(
        "--max-retries",
        type=int,
        default=5,
        help="retries of a request that got 429, 5xx or a connection error (default: %(default)s)",
    )
    sc.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        help="first retry wait in seconds, doubled each retry; a Retry-After header "
        "wins (default: %(default)s)",
    )
    sc.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds per HTTP request (default: %(default)s)",
    )
    sc.add_argument(
        "--page-size",
        type=int,
        default=50,
        choices=range(1, 201),
        metavar="1..200",
        help="tracks per search page, the API's limit (default: %(default)s)",
    )
    sc.add_argument(
        "--max-pages",
        type=positive_int,
        default=100,
        help="most search pages read per genre (default: %(default)s)",
    )
    sc.add_argument(
        "--genre-table",
        type=Path,
        default=TOKENS_CSV,
        help="token,genre CSV that maps free-text genre tags to canonical genres "
        "(default: train/collect/genre_tokens.csv)",
    )
    sc.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    client_id = os.environ.get(CLIENT_ID_ENV, "").strip()
    if not client_id:
        parser.error(
            f"set ${CLIENT_ID_ENV} to your SoundCloud API client id "
            "(register an app at https://soundcloud.com/you/apps)"
        )
    queries: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in args.genres.split(","))):
        genre = normalise_genre(term, args.genre_table)
        if genre is None:
            parser.error(
                f"--genres: {term!r} maps to no genre; known: "
                f"{', '.join(canonical_genres(args.genre_table))}"
            )
        queries.setdefault(term, genre)
    if not queries:
        parser.error("--genres: give at least one genre")
    licenses = [x.strip() for x in args.license.split(",") if x.strip()]
    client = SoundCloudClient(
        client_id,
        args.api_base,
        max_rps=args.max_rps,
        max_retries=args.max_retries,
        backoff=args.backoff,
        timeout=args.timeout,
    )
    try:
        summary = collect(
            client,
            queries,
            args.per_genre,
            args.out,
            licenses or None,
            page_size=args.page_size,
            max_pages=args.max_pages,
            progress=not args.no_progress,
            genre_table=args.genre_table,
        )
    except (ApiError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.report(args.out))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
