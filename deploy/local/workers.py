"""The pipeline's workers that ``runstream dev up`` starts after Kafka and ClickHouse.

A worker is a long-running command (the sink, the stream processors, the notifier): add a
:class:`WorkerSpec` to :func:`default_workers` and ``dev up | down | status`` handle it.
"""

from __future__ import annotations

import os
import re
import site
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import runstream
from runstream.errors import StackError
from runstream.settings import Settings

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
RESERVED = frozenset({"kafka", "clickhouse"})


@dataclass(frozen=True)
class WorkerSpec:
    """One worker: its name (pid file, log file, status line) and its full command line."""

    name: str
    argv: Sequence[str]

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name in RESERVED:
            raise StackError(
                f"worker name {self.name!r} must be lowercase letters, digits, '-' or '_' "
                f"(it names files), and not one of {', '.join(sorted(RESERVED))}"
            )
        if not self.argv:
            raise StackError(f"worker {self.name!r} has an empty command line")
        object.__setattr__(self, "argv", tuple(self.argv))  # frozen means frozen: no lists


def default_workers() -> list[WorkerSpec]:
    """What ``runstream dev up`` runs unless told otherwise (``--no-workers``)."""
    runstream_cli = [sys.executable, "-m", "runstream"]
    return [
        WorkerSpec("sink", [*runstream_cli, "sink"]),
        WorkerSpec("processors", [*runstream_cli, "processors"]),
        WorkerSpec("notifier", [*runstream_cli, "notifier"]),
        *_ui_worker(runstream_cli),
    ]


def _ui_worker(runstream_cli: list[str]) -> list[WorkerSpec]:
    """The web UI (``runstream ui``, on the settings' ``ui_host``/``ui_port``) when its extra is
    installed."""
    import importlib.util

    if importlib.util.find_spec("starlette") and importlib.util.find_spec("uvicorn"):
        return [WorkerSpec("ui", [*runstream_cli, "ui"])]
    return []


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings the workers must share with the stack, as RUNSTREAM_* variables."""
    return {
        "RUNSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RUNSTREAM_CLICKHOUSE_URL": settings.clickhouse_url,
        "RUNSTREAM_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "RUNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        # faust creates its changelog topics with this many partitions: as many as the events.
        "RUNSTREAM_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "RUNSTREAM_TOPIC_REPLICATION": str(settings.topic_replication),
        "RUNSTREAM_HOME": str(settings.home),
        "RUNSTREAM_SINK_METRICS_PORT": str(settings.sink_metrics_port),
        "RUNSTREAM_UI_HOST": settings.ui_host,
        "RUNSTREAM_UI_PORT": str(settings.ui_port),
    }


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child Python that must import this same runstream.

    The children run from the stack's home, so a runstream found through the current directory
    (a source checkout without ``pip install``) would not be found there: name it in PYTHONPATH.
    """
    env = dict(os.environ)
    root = Path(runstream.__file__).resolve().parent.parent
    site_dirs = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in site_dirs:
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(root) not in paths:
            env["PYTHONPATH"] = os.pathsep.join([str(root), *paths])
    env.update(extra or {})
    return env
