"""The registry of the process's active runs: :data:`run`, the current one (what
``runstream.run``, ``runstream.log`` and ``runstream.wandb`` use), and every run not yet finished
(what the exit hook of ``producers/hooks.py`` finishes). A forked child inherits none of them.

The state lives here only, once per process: read ``active.run`` at call time, never copy it.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runstream.producers.run import Run

run: Run | None = None
"""The run most recently started with :func:`~runstream.producers.start.init` and not yet
finished."""

_active: list[Run] = []
_active_lock = threading.Lock()


def active_runs() -> list[Run]:
    with _active_lock:
        return list(_active)


def register(new: Run) -> None:
    """Make ``new`` the current run and finish it at exit if the program does not."""
    global run
    from runstream.producers import hooks

    hooks.install()
    with _active_lock:
        _active.append(new)
        run = new


def track(disabled: Run) -> None:
    """Keep a disabled run among the active ones without making it the current run."""
    with _active_lock:
        _active.append(disabled)


def unregister(done: Run) -> None:
    global run
    with _active_lock:
        if done in _active:
            _active.remove(done)
        if run is done:
            run = _active[-1] if _active else None


def _after_fork_in_child() -> None:
    global run
    for inherited in _active:
        inherited._after_fork_in_child()
    _active.clear()
    run = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
