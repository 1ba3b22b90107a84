"""Ending runs when the program ends: normally, by an uncaught exception, or by SIGTERM.

Installed once, at the first ``runstream.init``. Each hook chains to whatever was there before,
so the program's own handlers still run and its exit status does not change.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from types import FrameType, TracebackType

logger = logging.getLogger("runstream")

_installed = False
_install_lock = threading.Lock()


def install() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
    previous_hook = sys.excepthook

    def excepthook(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        _finish_all(exc_type, exc)
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook
    atexit.register(_finish_all, None, None)
    if threading.current_thread() is threading.main_thread():
        _install_sigterm()


def _install_sigterm() -> None:
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _finish_all(None, None, exit_code=128 + signum, status="killed")
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            # Die of the signal as the program would have without us, exit status included.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    # ValueError: not the main thread of the main interpreter; the other hooks still apply.
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, on_sigterm)


def _finish_all(
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    *,
    exit_code: int | None = None,
    status: str | None = None,
) -> None:
    from runstream.producers.run import active_runs, exit_status

    if exit_code is None or status is None:
        exit_code, status = exit_status(exc_type, exc)
    for run in active_runs():
        try:
            run.finish(exit_code=exit_code, status=status)
        except Exception:  # ending the program must go on whatever happens here
            logger.exception("runstream: could not finish run %s", getattr(run, "id", "?"))
