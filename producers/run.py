"""The public SDK surface: ``runstream.init`` and :class:`Run`.

Everything here runs in the caller's thread, so each method does the least it can: capture the
values, append a tuple to the worker's queue, return. Encoding and I/O happen on the worker.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from runstream.producers.values import Refusals, flatten_metrics, to_json
from runstream.producers.worker import RunChannel, Worker, get_worker
from runstream.schemas import Topics, new_run_id
from runstream.schemas.codec import json_safe_metrics
from runstream.settings import Mode, Settings

logger = logging.getLogger("runstream")


@dataclass(frozen=True)
class FinishResult:
    """What happened to a run's events by the time :meth:`Run.finish` returned."""

    produced: int
    delivered: int
    failed: int
    last_error: str | None = None

    @property
    def pending(self) -> int:
        return self.produced - self.delivered - self.failed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.pending == 0


class Run:
    """One training run. Create it with :func:`runstream.init`."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        tags: list[str] | None = None,
        group: str | None = None,
        job_type: str | None = None,
        notes: str | None = None,
        id: str | None = None,
        worker: Worker | None = None,
    ) -> None:
        self.settings = settings
        self.id = id or new_run_id()
        self.project = settings.project
        self.name = name or self.id
        self.group = group
        self.job_type = job_type
        self.notes = notes
        self._refusals = Refusals()
        self.config: dict[str, Any] = to_json(dict(config or {}), self._refusals)
        self.tags = list(tags or [])
        self._step = 0
        self._pending: dict[str, Any] | None = None
        self._pending_step = 0
        self._finished: FinishResult | None = None
        self._finish_lock = threading.Lock()
        self._warned_step = False
        self._worker = worker or get_worker()
        self._channel: RunChannel = self._worker.open_channel(
            self.id, self.project, Topics(settings.topic_prefix).events, settings
        )
        self._emit(
            "run_started",
            {
                "name": self.name,
                "config": self.config,
                "tags": self.tags,
                "group": group,
                "job_type": job_type,
                "notes": notes,
                "environment": _environment(),
            },
        )

    # --- logging ----------------------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        """Record metric values at ``step`` (default: the run's own counter).

        ``commit=False`` keeps collecting values for the same step until a call with
        ``commit=True`` (or with another step) sends them as one event.
        """
        if self._finished is not None:
            return
        if step is None:
            step = self._step
        elif step < self._step - (1 if self._pending is None else 0) or step < 0:
            if not self._warned_step:
                self._warned_step = True
                logger.warning(
                    "runstream: step %s is below the run's current step %s; such calls are "
                    "ignored (warned once). Steps must not decrease.",
                    step,
                    self._step - 1,
                )
            return
        if self._pending is not None and step != self._pending_step:
            self._send_pending()
        if self._pending is None:
            self._pending = dict(data)
            self._pending_step = step
        else:
            self._pending.update(data)
        if commit:
            self._send_pending()

    def _send_pending(self) -> None:
        data, step = self._pending, self._pending_step
        self._pending = None
        self._step = step + 1
        self._worker.submit(
            (
                self._channel,
                "metrics_logged",
                time.time(),
                _metrics_body,
                step,
                data,
                self._refusals,
            )
        )

    # --- ending -------------------------------------------------------------------------------
    def finish(self, exit_code: int = 0, status: str | None = None) -> FinishResult:
        """End the run and wait at most ``settings.finish_timeout`` seconds for delivery.

        Idempotent: a second call returns the first call's result.
        """
        with self._finish_lock:
            if self._finished is not None:
                return self._finished
            if self._pending is not None:
                self._send_pending()
            if status is None:
                status = "finished" if exit_code == 0 else "failed"
            self._emit("run_finished", {"exit_code": exit_code, "status": status})
            self._worker.flush(self.settings.finish_timeout)
            channel = self._channel
            result = FinishResult(
                channel.produced, channel.delivered, channel.failed, channel.last_error
            )
            self._finished = result
            self._worker.close_channel(channel)
        if not result.ok:
            logger.warning(
                "runstream: run %s finished with %d of %d events undelivered (%d failed%s)",
                self.id,
                result.pending + result.failed,
                result.produced,
                result.failed,
                f": {result.last_error}" if result.last_error else "",
            )
        _forget(self)
        return result

    @property
    def finished(self) -> bool:
        return self._finished is not None

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish(exit_code=130, status="killed")
        elif issubclass(exc_type, SystemExit):
            code = exc.code if isinstance(exc, SystemExit) else 0
            exit_code = code if isinstance(code, int) else (0 if code is None else 1)
            self.finish(exit_code=exit_code)
        else:
            self.finish(exit_code=1, status="failed")

    def __repr__(self) -> str:
        return f"<Run {self.project}/{self.id} name={self.name!r}>"

    def _emit(self, type_name: str, body: dict[str, Any]) -> None:
        self._worker.submit((self._channel, type_name, time.time(), _static_body, body))


# --- body builders: run on the worker thread --------------------------------------------------
def _metrics_body(step: int, data: Mapping[str, Any], refusals: Refusals) -> dict[str, Any] | None:
    metrics = flatten_metrics(data, refusals)
    if not metrics:
        return None
    return {"step": step, "metrics": json_safe_metrics(metrics)}


def _static_body(body: dict[str, Any]) -> dict[str, Any]:
    return body


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "executable": sys.executable,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
    }
    env.update(_git_info())
    return env


def _git_info() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=2, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit,
        "git_branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "git_remote": git("config", "--get", "remote.origin.url"),
        "git_dirty": None if status is None else bool(status),
    }


# --- module-level API ---------------------------------------------------------------------------
run: Run | None = None
"""The run most recently started with :func:`init` and not yet finished."""

_runs_lock = threading.Lock()


def init(
    *,
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
    group: str | None = None,
    job_type: str | None = None,
    notes: str | None = None,
    id: str | None = None,
    mode: Mode | None = None,
    dir: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
) -> Run:
    """Start a run. Arguments override ``RUNSTREAM_*`` environment variables and defaults."""
    global run
    base = settings if settings is not None else Settings.load()
    resolved = base.with_overrides(project=project, mode=mode, dir=dir)
    new = Run(
        resolved,
        name=name,
        config=config,
        tags=tags,
        group=group,
        job_type=job_type,
        notes=notes,
        id=id,
    )
    with _runs_lock:
        run = new
    return new


def _forget(finished: Run) -> None:
    global run
    with _runs_lock:
        if run is finished:
            run = None
