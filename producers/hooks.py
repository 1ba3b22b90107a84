"""Ending runs when the program ends, with the exit status the program really ends with.

Installed once, at the first ``runstream.init``; each hook chains to whatever was there before,
so the program's own handlers still run and its exit status does not change:

- ``sys.excepthook``: an uncaught exception finishes open runs as ``failed`` (1), or ``killed``
  (130) for ``KeyboardInterrupt``;
- ``atexit``: finishes open runs with the status of how the program is ending. Python does not
  tell atexit handlers the exit code, so it is observed on the way out: on Python 3.12+
  ``sys.monitoring`` watches the exceptions that leave the ``__main__`` module's code
  (``sys.exit(n)``, ``raise SystemExit(n)``, and uncaught exceptions even when another library
  replaced ``sys.excepthook``); elsewhere ``sys.exit`` is wrapped and a call on the main thread
  records its code;
- SIGTERM: with no handler of the program's own (or the default one), the runs are finished
  as ``killed`` (143) and the signal then ends the process as it would have. A handler the
  program installed before ``init`` runs first and decides: if it exits, the runs end with its
  exit code (``sys.exit(143)``: ``killed``/143); if it returns, the program goes on and the
  runs stay open. An ignored SIGTERM stays ignored. A handler installed after ``init`` replaces
  ours; its ``sys.exit(n)`` is seen as above.

Not observable: ``os._exit`` and SIGKILL end the process with no Python code running; the
run's heartbeats stop, the processors mark it ``crashed``, and ``runstream sync`` delivers what
its spool holds. Where ``sys.monitoring`` is not used (Python 3.10 and 3.11, or no
``__main__`` script), ``raise SystemExit(n)`` outside a ``with runstream.init()`` block and an
``exit`` imported from ``sys`` before ``init`` are not seen (the run ends as ``finished``), and
a ``sys.exit(n)`` that the program catches and survives is still taken as its exit code.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType, TracebackType
from typing import Any, NoReturn

logger = logging.getLogger("runstream")

_installed = False
_install_lock = threading.Lock()
_ending: BaseException | None = None
"""The exception the program is ending with, as last seen leaving it (None: none seen)."""


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
        if exc_type is KeyboardInterrupt:
            _keep_sigint_exit()

    sys.excepthook = excepthook
    atexit.register(_at_exit)
    if not _watch_main_module():
        _wrap_sys_exit()
    if threading.current_thread() is threading.main_thread():
        _install_sigterm()


def _at_exit() -> None:
    ending = _ending
    if ending is None:
        _finish_all(None, None)
    else:
        _finish_all(type(ending), ending)
        if type(ending) is KeyboardInterrupt:
            _keep_sigint_exit()


def _keep_sigint_exit() -> None:
    """Keep the exit status of an uncaught ``KeyboardInterrupt`` (death by SIGINT, 130).

    CPython ends such a program by re-raising SIGINT after finalization, but only if a flag it
    sets when the main code ends with ``KeyboardInterrupt`` is still set then; every
    ``exec``/``eval`` of a string clears it (``run_eval_code_obj`` in Python/pythonrun.c), and
    finishing a run can run such code (classes built by ``dataclasses`` or ``namedtuple`` in a
    module imported on the way out), which made the process exit 1. Evaluating code that ends
    with ``KeyboardInterrupt`` is the one way Python offers to set the flag again.
    """
    with contextlib.suppress(KeyboardInterrupt):
        exec("raise KeyboardInterrupt")  # a constant: see the docstring


def _wrap_sys_exit() -> None:
    original: Callable[..., NoReturn] = sys.exit
    if getattr(original, "_runstream", False):
        return

    def exit(status: object = None, /) -> NoReturn:
        global _ending
        if threading.current_thread() is threading.main_thread():
            _ending = SystemExit(status)
        original(status)

    exit.__doc__ = original.__doc__
    exit._runstream = True  # type: ignore[attr-defined]
    sys.exit = exit


def _watch_main_module() -> bool:
    """On Python 3.12+: see every exception that leaves the ``__main__`` module's code.
    False when that cannot be done here (older Python, no script, no free tool id)."""
    monitoring: Any = getattr(sys, "monitoring", None)
    main_code = _main_module_code()
    if monitoring is None or main_code is None:
        return False
    tool = next((t for t in (3, 4) if monitoring.get_tool(t) is None), None)
    if tool is None:
        return False

    def unwind(code: CodeType, _offset: int, exc: BaseException) -> None:
        global _ending
        if code is main_code:  # leaves the script's top level: that ends the program
            _ending = exc

    try:
        monitoring.use_tool_id(tool, "runstream")
        monitoring.register_callback(tool, monitoring.events.PY_UNWIND, unwind)
        monitoring.set_events(tool, monitoring.get_events(tool) | monitoring.events.PY_UNWIND)
    except (ValueError, RuntimeError) as exc:
        logger.debug("runstream: exit status watch not installed: %s", exc)
        return False
    return True


def _main_module_code() -> CodeType | None:
    """The code object of the running script's top level, found on the main thread's stack."""
    main = sys.modules.get("__main__")
    frame: FrameType | None = sys._current_frames().get(threading.main_thread().ident or 0)
    if main is None or frame is None:
        return None
    found = None
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            found = frame.f_code
        frame = frame.f_back
    return found


def _install_sigterm() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        return  # the program ignores SIGTERM: so do its runs

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if callable(previous):
            # The program's own handler decides: it may exit (seen at exit, with its code) or
            # return and go on (then the runs go on too).
            previous(signum, frame)
            return
        _finish_all(None, None, exit_code=128 + signum, status="killed")
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
    from runstream.producers.active import active_runs
    from runstream.producers.ending import exit_status

    if exit_code is None or status is None:
        exit_code, status = exit_status(exc_type, exc)
    for run in active_runs():
        try:
            run.finish(exit_code=exit_code, status=status)
        except Exception:  # ending the program must go on whatever happens here
            logger.exception("runstream: could not finish run %s", getattr(run, "id", "?"))
