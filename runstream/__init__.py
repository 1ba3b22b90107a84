"""runstream: experiment tracking for machine learning, on Kafka and ClickHouse.

import runstream

run = runstream.init(project="mnist", config={"lr": 1e-3})
for step in range(1000):
    run.log({"loss": loss}, step=step)
run.finish()
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runstream._version import __version__
from runstream.errors import RunstreamError
from runstream.producers import FinishResult, Run, init
from runstream.producers.artifacts import Artifact
from runstream.producers.histograms import Histogram
from runstream.settings import Settings

if TYPE_CHECKING:
    from runstream.read.api import Api

    run: Run | None


no_run_calls: dict[str, int] = {}
"""Calls of :func:`log` and :func:`finish` made with no current run (before :func:`init`, or
after the run finished), by function name: each is ignored, warned about once, counted here."""


def _no_run(call: str) -> None:
    count = no_run_calls.get(call, 0)
    no_run_calls[call] = count + 1
    if count == 0:
        logging.getLogger("runstream").warning(
            "runstream: runstream.%s() with no run: call runstream.init() first; ignored "
            "(warned once, counted in runstream.no_run_calls)",
            call,
        )


def log(
    data: Mapping[str, Any] | None = None,
    step: int | None = None,
    commit: bool = True,
    *args: Any,
    **kwargs: Any,
) -> None:
    """Log to the current run (the one :func:`init` returned last), as :meth:`Run.log` does.
    Without one (before :func:`init`, after its :meth:`Run.finish`) the call is ignored with
    one warning, and counted in :data:`no_run_calls`. Never raises."""
    from runstream.producers import active

    current = active.run
    if current is not None:
        current.log(data, step, commit, *args, **kwargs)
    else:
        _no_run("log")


def finish(exit_code: int | None = None) -> FinishResult | None:
    """Finish the current run and return its :class:`FinishResult`; without one, ``None``
    (warned once, counted in :data:`no_run_calls`). Without ``exit_code`` the status is that
    of an exception in flight, if any (:meth:`Run.finish`)."""
    from runstream.producers import active

    current = active.run
    if current is None:
        _no_run("finish")
        return None
    return current.finish(exit_code=exit_code)


def __getattr__(name: str) -> Any:
    if name == "run":  # read at call time: the current run changes with init() and finish()
        from runstream.producers import active

        return active.run
    if name == "Api":  # the read side (clickhouse-connect) only when asked for
        from runstream.read.api import Api

        return Api
    raise AttributeError(f"module 'runstream' has no attribute {name!r}")


__all__ = [
    "Api",
    "Artifact",
    "FinishResult",
    "Histogram",
    "Run",
    "RunstreamError",
    "Settings",
    "__version__",
    "finish",
    "init",
    "log",
    "no_run_calls",
]
