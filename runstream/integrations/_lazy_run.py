"""What the integrations share: the check of their constructors' arguments, and for the Hugging
Face ones (transformers, accelerate) the run they log into, started lazily on the main process,
ended with the status training ended with, and the guard that keeps tracking from ever raising
into a training loop.

No third-party library is imported here.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, ParamSpec

from runstream.producers.ending import exit_status
from runstream.producers.run import Run
from runstream.producers.start import init

logger = logging.getLogger("runstream")

INIT_ARGUMENTS: tuple[str, ...] = tuple(inspect.signature(init).parameters)
"""The keyword arguments of :func:`runstream.init`, which every integration passes on."""

P = ParamSpec("P")


def check_arguments(
    owner: str, init_kwargs: Mapping[str, Any], run: Run | None, own: str = ""
) -> dict[str, Any]:
    """The arguments an integration's constructor got for :func:`runstream.init`, checked when
    it is built (in the user's code, before training starts) rather than when the run starts.

    Raises ``TypeError`` for a keyword ``runstream.init`` does not take (naming ``own``, the
    integration's own keywords, too), and when both ``run=`` and ``init``'s arguments are given
    (the run is then already started: they would be ignored).
    """
    call = owner if owner.endswith(")") else f"{owner}()"  # a class name, or a whole call
    unknown = sorted(set(init_kwargs) - set(INIT_ARGUMENTS))
    if unknown:
        raise TypeError(
            f"{call} got {', '.join(repr(k) for k in unknown)}: it takes run= (a run you "
            f"started) or the keyword arguments of runstream.init "
            f"({', '.join(INIT_ARGUMENTS)})" + (f", and its own: {own}" if own else "")
        )
    if run is not None and init_kwargs:
        raise TypeError(
            f"{call} got run= and {', '.join(sorted(init_kwargs))}: a run you pass is already "
            "started, so runstream.init's arguments cannot apply to it; pass one or the other"
        )
    if run is not None and not isinstance(run, Run):
        raise TypeError(f"{owner}(run=...) takes a runstream Run, not a {type(run).__name__}")
    return dict(init_kwargs)


class LazyRun:
    """The run one integration logs into.

    Either the user's (``run=``: logged into, never finished here) or one this object starts
    with ``runstream.init`` the first time it is needed (:meth:`get`) and finishes when
    training ends (:meth:`end`). A run that cannot be started (``init`` raised: a bad setting,
    a refused resume) is reported once at ERROR level and training goes on without logging.
    """

    def __init__(self, owner: str, init_kwargs: Mapping[str, Any], run: Run | None) -> None:
        self.owner = owner
        self.init_kwargs = check_arguments(owner, init_kwargs, run)
        self.run: Run | None = run
        self.owned = run is None
        self._start_failed = False

    @property
    def open(self) -> Run | None:
        """The run if it is started and not finished."""
        run = self.run
        return run if run is not None and not run.finished else None

    def get(self, defaults: Mapping[str, Any] | None = None, *, new: bool = False) -> Run | None:
        """The run to log into, started now if there is none.

        ``defaults``: ``init`` arguments the integration fills in from the library (a run name,
        a project) when the user did not give them. ``new``: start another run when ours has
        finished (a new ``train()``); otherwise a finished run of ours stays the answer (its
        ``log()`` ignores the call, with one warning). None: the run could not be started.
        """
        run = self.run
        if run is not None and not (new and self.owned and run.finished):
            return run
        if self._start_failed:
            return None
        kwargs = {**(defaults or {}), **self.init_kwargs}
        try:
            self.run = init(**kwargs)
        except Exception as exc:  # the promise: tracking never stops training
            self._start_failed = True
            logger.error(
                "runstream: %s could not start a run: %s: %s; training goes on without "
                "logging to runstream",
                self.owner,
                type(exc).__name__,
                exc,
            )
            return None
        return self.run

    def end(self, exc: BaseException | None = None) -> None:
        """Finish the run if it is ours and open: ``finished`` without ``exc``; with it, the
        status :func:`runstream.producers.ending.exit_status` gives (``failed``/1,
        ``killed``/130 for ``KeyboardInterrupt``)."""
        run = self.run
        if run is None or not self.owned or run.finished:
            return
        code, status = exit_status(type(exc) if exc is not None else None, exc)
        run.finish(exit_code=code, status=status)


def in_flight() -> BaseException | None:
    """The exception being handled or propagating through a ``finally`` block around the
    caller, if any (what ``sys.exc_info()`` says there)."""
    return sys.exc_info()[1]


def guarded(method: Callable[P, None]) -> Callable[P, None]:
    """Make a hook of an integration (a method) never raise into the training loop: an
    exception in it is logged once per hook and object, with its traceback, and the hook
    returns None."""

    @functools.wraps(method)
    def hook(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            owner = args[0] if args else None
            warned: set[str] = getattr(owner, "__dict__", {}).setdefault("_runstream_warned", set())
            if method.__name__ not in warned:
                warned.add(method.__name__)
                logger.warning(
                    "runstream: %s.%s raised; training goes on, this hook's logging may be "
                    "incomplete (warned once)",
                    type(owner).__name__,
                    method.__name__,
                    exc_info=True,
                )

    return hook


def find_caller_self(
    names: tuple[str, ...], kind: type | tuple[type, ...], *, depth: int = 12
) -> tuple[Any, FrameType] | None:
    """Find, among the callers of the caller, the frame of a function named one of ``names``
    whose ``self`` is an instance of ``kind``; return that ``self`` and the frame.

    Library hooks that do not pass their owner (a ``TrainerCallback`` is not given its
    ``Trainer``, a ``GeneralTracker`` not the arguments of ``init_trackers``) find it this way.
    Only the frames' code names are compared until one matches, so no other frame's locals are
    read. None when not found within ``depth`` frames.
    """
    frame: FrameType | None = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return None
        if frame.f_code.co_name in names:
            owner = frame.f_locals.get("self")
            if isinstance(owner, kind):
                return owner, frame
        frame = frame.f_back
    return None
