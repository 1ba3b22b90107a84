"""runstream: experiment tracking for machine learning, on Kafka and ClickHouse.

import runstream

run = runstream.init(project="mnist", config={"lr": 1e-3})
for step in range(1000):
    run.log({"loss": loss}, step=step)
run.finish()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runstream._version import __version__
from runstream.errors import RunstreamError
from runstream.producers import FinishResult, Run, init
from runstream.settings import Settings

if TYPE_CHECKING:
    run: Run | None


def log(data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
    """Log to the current run (the one :func:`init` returned last); a no-op without one."""
    from runstream.producers import active

    current = active.run
    if current is not None:
        current.log(data, step=step, commit=commit)


def finish(exit_code: int = 0) -> FinishResult | None:
    """Finish the current run, if any."""
    from runstream.producers import active

    current = active.run
    return current.finish(exit_code=exit_code) if current is not None else None


def __getattr__(name: str) -> Any:
    if name == "run":  # read at call time: the current run changes with init() and finish()
        from runstream.producers import active

        return active.run
    raise AttributeError(f"module 'runstream' has no attribute {name!r}")


__all__ = [
    "FinishResult",
    "Run",
    "RunstreamError",
    "Settings",
    "__version__",
    "finish",
    "init",
    "log",
]
