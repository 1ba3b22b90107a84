#!/usr/bin/env python3
"""``runstream-wait-for-topics``: wait until Kafka has every topic this image knows.

Baked into the image (``deploy/compose/Dockerfile``) for the init containers of the processors
and the notifier in ``deploy/k8s`` (compose waits with ``depends_on: topics``). The topics are
the runstream-topics Job's to create, with their configurations: without this wait a processor
would subscribe to a ticks topic that does not exist yet (and get no partitions), and the
notifier would produce to an alerts topic that Kafka, with automatic creation off, refuses.
Reads the same ``RUNSTREAM_*`` environment as ``runstream``. Drop it once the CLI can wait
(say, ``runstream topics --wait``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from runstream.errors import RunstreamError
from runstream.schemas.topics import Topics
from runstream.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runstream-wait-for-topics",
        description="Wait until every Kafka topic of this runstream version exists.",
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


def missing_topics(settings: Settings, timeout: float = 10.0) -> list[str]:
    """The runstream topics Kafka does not have yet (or has without a usable leader)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    found = admin.list_topics(timeout=timeout).topics
    wanted = [spec.name for spec in Topics(settings.topic_prefix).specs()]
    return [name for name in wanted if name not in found or found[name].error is not None]


def wait_for_topics(settings: Settings, timeout: float, interval: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            missing = missing_topics(settings)
            reason = f"topics {', '.join(missing)} not there yet"
        except Exception as exc:  # Kafka still starting, or not reachable
            missing = ["?"]
            reason = f"cannot list the topics on {settings.kafka_bootstrap}: {exc}".splitlines()[0]
        if not missing:
            print("every topic exists")
            return 0
        if time.monotonic() >= deadline:
            print(
                f"runstream-wait-for-topics: gave up after {timeout:.0f}s: {reason}",
                file=sys.stderr,
            )
            return 1
        print(f"waiting for runstream topics: {reason}", flush=True)
        time.sleep(interval)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return wait_for_topics(Settings.load(), args.timeout, args.interval)
    except RunstreamError as exc:
        print(f"runstream-wait-for-topics: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
