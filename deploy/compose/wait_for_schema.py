#!/usr/bin/env python3
"""``runstream-wait-for-schema``: wait until ClickHouse has every migration this image knows.

Baked into the image (``deploy/compose/Dockerfile``) for the sink's init container in
``deploy/k8s``: a sink applies missing migrations itself at start, so without this wait a new
sink would race the migrate Job (and the other sinks) through the same DDL and backfills.
Reads the same ``RUNSTREAM_*`` environment as ``runstream``. Drop it once the CLI can wait
(say, ``runstream migrate --wait``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from runstream.errors import RunstreamError
from runstream.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runstream-wait-for-schema",
        description="Wait until every migration of this runstream version is applied.",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up after this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between checks (default: %(default)s)"
    )
    return parser


def wait_for_schema(settings: Settings, timeout: float, interval: float = 5.0) -> int:
    from runstream.sinks.clickhouse import connect
    from runstream.sinks.migrations import applied, available

    wanted = {m.version for m in available()}
    url = urlsplit(settings.clickhouse_url)
    # Errors quote the URL, password included; this output lands in every sink pod's log.
    redacted = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()
    deadline = time.monotonic() + timeout
    while True:
        try:
            missing = wanted - applied(
                connect(settings, database="default"), settings.clickhouse_database
            )
            reason = f"migrations {sorted(missing)} not applied yet"
        except Exception as exc:  # no database or table yet, ClickHouse still starting
            missing = wanted
            reason = str(exc).splitlines()[0].replace(settings.clickhouse_url, redacted)
        if not missing:
            print("schema is up to date")
            return 0
        if time.monotonic() >= deadline:
            print(
                f"runstream-wait-for-schema: gave up after {timeout:.0f}s: {reason}",
                file=sys.stderr,
            )
            return 1
        print(f"waiting for runstream migrate: {reason}", flush=True)
        time.sleep(interval)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return wait_for_schema(Settings.load(), args.timeout, args.interval)
    except RunstreamError as exc:
        print(f"runstream-wait-for-schema: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
