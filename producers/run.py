"""The public SDK surface: ``runstream.init`` and :class:`Run`.

Everything here runs in the caller's thread, so each method does the least it can: capture the
values, append a tuple to the worker's queue, return. Encoding, disk and network I/O happen on
the worker (``producers/worker.py``).
"""

from __future__ import annotations

import hashlib
import logging
import operator
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from runstream.errors import RunstreamError
from runstream.producers.spool import RunSpool
from runstream.producers.values import (
    INT64_MAX,
    MAX_NAME_LENGTH,
    Refusals,
    flatten_metrics,
    is_text,
    repair_text,
    to_json,
)
from runstream.producers.worker import RunChannel, Worker, get_worker, new_spool_state
from runstream.schemas import new_run_id
from runstream.schemas.codec import json_safe_metrics
from runstream.settings import Mode, Settings

logger = logging.getLogger("runstream")

SummaryKind = Literal["min", "max", "last", "mean"]
AlertLevel = Literal["info", "warn", "error"]
_LEVELS = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}
_time = time.time


class ResumeError(RunstreamError):
    """A run could not be resumed (or must not be) as asked."""


@dataclass(frozen=True)
class FinishResult:
    """What happened to a run's events by the time :meth:`Run.finish` returned."""

    produced: int
    delivered: int
    failed: int
    spooled: int
    last_error: str | None = None
    offline: bool = False

    @property
    def pending(self) -> int:
        """Events kept in the local spool for ``runstream sync``."""
        return self.produced - self.delivered - self.failed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and (self.offline or self.pending == 0)


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
        self.project = settings.project
        self.mode = settings.mode
        self._refusals = Refusals()
        self.group = _text_or_none(group, "group", self._refusals)
        self.job_type = _text_or_none(job_type, "job_type", self._refusals)
        self.notes = _text_or_none(notes, "notes", self._refusals)
        self._step = 0
        self._pending: dict[str, Any] | None = None
        self._pending_step = 0
        self._finished: FinishResult | None = None
        self._forked = False
        self._finish_lock = threading.Lock()
        self._warned_finished = False
        self._submitted = 0  # metrics events handed to the worker (for summary reads)
        self._observed = 0  # of which the worker has seen (RunSummary waits for them)
        self._summary_kinds: dict[str, SummaryKind] = {}
        self._checked_names: set[str] = set()
        self._worker = worker or get_worker()

        resumed_from = self._resolve_id(id)
        self.name = _text_or_none(name, "name", self._refusals) or self.id
        self._tags = _clean_tags(tags, self._refusals)
        self.config = RunConfig(self, _config_dict(config, self._refusals))
        self.summary = RunSummary(self)
        spool = RunSpool.create_or_open(
            settings.dir, new_spool_state(self.id, self.project, settings, self.mode)
        )
        if resumed_from is not None:
            state = spool.state
            if resumed_from[0] > state.next_seq:
                # Delivered from elsewhere (another machine, an earlier sync): nothing before
                # it is this spool's to send.
                state.acked_through = resumed_from[0] - 1
            state.next_seq = max(state.next_seq, resumed_from[0])
            state.last_step = max(state.last_step, resumed_from[1])
        self._step = spool.state.last_step + 1
        self._channel: RunChannel = self._worker.open_channel(
            self.id, self.project, settings, spool=spool, online=self.mode == "online"
        )
        self._channel.refusals = self._refusals  # what the worker leaves out is counted here
        if resumed_from is None:
            self._emit(
                "run_started",
                {
                    "name": self.name,
                    "config": dict(self.config),
                    "tags": self._tags,
                    "group": self.group,
                    "job_type": self.job_type,
                    "notes": self.notes,
                    "environment": _environment(),
                },
            )
        else:
            self._emit("run_resumed", {"step": self._step})
            if len(self.config):
                self._emit("config_updated", {"config": dict(self.config)})
        _register(self)

    def _resolve_id(self, id: str | None) -> tuple[int, int] | None:
        """Choose the run id; for a resumed run, where it stands (next seq, last step)."""
        settings = self.settings
        resume = settings.resume
        self.id = id or settings.run_id or new_run_id()
        if resume is None:
            return None
        if not (id or settings.run_id):
            raise ResumeError(f"resume={resume!r} needs the id of the run: pass id=...")
        from runstream.producers.resume import find_position

        position = find_position(settings, self.id)
        if resume == "never" and position.exists:
            raise ResumeError(
                f"run {self.id} already exists ({', '.join(position.found_in)}) and "
                "resume='never'; choose another id or use resume='allow'"
            )
        if resume == "must" and not position.exists:
            raise ResumeError(
                f"run {self.id} was not found in the local spool ({settings.dir}) nor in "
                f"ClickHouse ({settings.clickhouse_url}); resume='must' needs an existing run"
            )
        return (position.next_seq, position.last_step) if position.exists else None

    # --- logging ----------------------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        """Record metric values at ``step`` (default: one past the highest step logged so far).

        ``step`` is anything ``operator.index()`` takes (Python, numpy and torch integers) from
        0 to 2**63-1 (ClickHouse's Int64); a step lower than the highest is stored like any
        other. ``commit=False`` keeps collecting values for the same step until a call with
        ``commit=True`` (or with another step) sends them as one event. Never raises: what
        cannot be stored is refused with one warning per kind and counted (:attr:`refused`).
        """
        try:
            if self._finished is not None:
                self._log_after_finish()
                return
            if type(data) is not dict:
                data = self._as_mapping(data)  # type: ignore[assignment]
                if data is None:
                    return
            pending = self._pending
            if step is None:
                step = self._step if pending is None else self._pending_step
            elif type(step) is not int or step < 0 or step > INT64_MAX:
                step = self._check_step(step)
                if step is None:
                    return
            if pending is None:
                if commit:
                    if step >= self._step:
                        self._step = step + 1
                    self._submitted += 1
                    self._worker.submit(
                        (
                            self._channel,
                            "metrics_logged",
                            _time(),
                            _metrics_body,
                            step,
                            dict(data),
                            self,
                        )
                    )
                    return
                self._pending = dict(data)
                self._pending_step = step
                return
            if step != self._pending_step:
                self._send_pending()
                self._pending = dict(data)
                self._pending_step = step
            else:
                pending.update(data)
            if commit:
                self._send_pending()
        except Exception as exc:  # log() must never stop a training loop
            self._refusals.refuse("log()", f"the call failed ({type(exc).__name__}: {exc})", "call")

    def _send_pending(self) -> None:
        data, step = self._pending, self._pending_step
        self._pending = None
        if step >= self._step:
            self._step = step + 1
        self._submitted += 1
        self._worker.submit(
            (self._channel, "metrics_logged", _time(), _metrics_body, step, data, self)
        )

    def _as_mapping(self, data: Any) -> Mapping[Any, Any] | None:
        if isinstance(data, Mapping):
            return data
        self._refusals.refuse(
            f"log({type(data).__name__})",
            f"log() takes a dict of metric names to values, not a {type(data).__name__}; "
            "the call is ignored",
            "call",
        )
        return None

    def _check_step(self, step: Any) -> int | None:
        """The step as a plain int, or None (refused, warned once per kind, counted)."""
        if isinstance(step, bool):
            reason = "a step must be an integer, not a bool"
        else:
            try:
                value = operator.index(step)
            except Exception:
                value = None
                reason = (
                    f"a step must be an integer (anything operator.index() takes), not "
                    f"{type(step).__name__}"
                )
            if value is not None:
                if 0 <= value <= INT64_MAX:
                    return value
                reason = "a step must be from 0 to 2**63-1 (ClickHouse Int64)"
        self._refusals.refuse(
            "step", f"{reason}; calls with such a step are ignored (step={step!r:.60})", "step"
        )
        return None

    def _log_after_finish(self) -> None:
        self._refusals.tally("after_finish")
        if not self._warned_finished:
            self._warned_finished = True
            where = "in a forked child process" if self._forked else "after finish()"
            logger.warning(
                "runstream: run %s: log() %s is ignored (warned once)%s",
                self.id,
                where,
                "; start a run in the child, or log from the parent" if self._forked else "",
            )

    @property
    def refused(self) -> int:
        """Values, calls and steps refused or changed so far (each was warned about once)."""
        return self._refusals.count

    # --- the rest of the surface ---------------------------------------------------------------
    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self._tags)

    @tags.setter
    def tags(self, tags: list[str] | tuple[str, ...]) -> None:
        self._tags = _clean_tags(tags, self._refusals)
        self._emit("tags_updated", {"tags": list(self._tags)})

    def define_metric(self, name: str, summary: SummaryKind = "last") -> None:
        """Choose which value summarises ``name`` (or every name matching ``prefix*``)."""
        if not _is_name(name):
            self._refusals.refuse(
                _safe_str(name)[:60],
                f"define_metric() needs a name of 1 to {MAX_NAME_LENGTH} characters of text",
                "name",
            )
            return
        if summary not in ("min", "max", "last", "mean"):
            logger.warning(
                "runstream: define_metric(%r, summary=%r) ignored: summary must be one of "
                "min, max, last, mean",
                name,
                summary,
            )
            return
        self._summary_kinds[name] = summary
        self.summary._kind_of.clear()  # names are matched against the patterns again
        self._emit("metric_defined", {"name": name, "summary": summary})

    def alert(self, title: str, text: str = "", level: Any = "info") -> None:
        """Raise an alert (delivered to the configured webhooks by the processors)."""
        raw = getattr(level, "value", level)  # wandb.AlertLevel.WARN -> "WARN"
        resolved = _LEVELS.get(str(raw).lower())
        if resolved is None:
            logger.warning("runstream: alert level %r is not info/warn/error; using 'info'", level)
            resolved = "info"
        title = _repair(_safe_str(title))[:1024] or "(untitled)"
        self._emit(
            "alert_raised", {"title": title, "text": _repair(_safe_str(text)), "level": resolved}
        )

    def log_artifact(
        self, path_or_uri: str | os.PathLike[str], name: str | None = None, type: str = "artifact"
    ) -> None:
        """Record an artifact's metadata (digest, size, uri). Files are read on the worker."""
        target = os.fspath(path_or_uri)
        self._worker.submit(
            (self._channel, "artifact_logged", _time(), _artifact_body, target, name, type, self)
        )

    # --- ending -------------------------------------------------------------------------------
    def finish(self, exit_code: int = 0, status: str | None = None) -> FinishResult:
        """End the run; wait at most ``settings.finish_timeout`` seconds for delivery.

        What is not delivered by then stays in the local spool, for ``runstream sync`` (or the
        next run of this process), and one line says so. Never hangs, never raises; calling it
        again returns the first result.
        """
        with self._finish_lock:
            if self._finished is not None:
                return self._finished
            if self._pending is not None:
                self._send_pending()
            if status is None:
                status = "finished" if exit_code == 0 else "failed"
            # Built on the worker, after every metric logged before it has been seen there.
            self._worker.submit(
                (self._channel, "summary_updated", _time(), _final_summary_body, self.summary)
            )
            self._emit("run_finished", {"exit_code": int(exit_code), "status": status})
            self._worker.close_channel(self._channel)
            self._worker.flush(self.settings.finish_timeout, self._channel)
            self._finished = self._result()
        result = self._finished
        _unregister(self)
        if self.mode == "offline":
            logger.info(
                "runstream: run %s is offline: %d events in %s; deliver them with "
                "'runstream sync %s'",
                self.id,
                result.produced,
                self.settings.dir,
                self.settings.dir,
            )
        elif not result.ok:
            logger.warning(
                "runstream: run %s: %d of %d events not delivered within %.1fs%s; they are kept "
                "in %s, deliver them with 'runstream sync %s'",
                self.id,
                result.pending + result.failed,
                result.produced,
                self.settings.finish_timeout,
                f" ({result.last_error})" if result.last_error else "",
                self.settings.dir,
                self.settings.dir,
            )
        return result

    def _result(self) -> FinishResult:
        channel = self._channel
        acked = channel.acked_through - channel.first_seq + 1  # by this process
        delivered = min(channel.produced, max(0, acked - channel.failed))
        return FinishResult(
            produced=channel.produced,
            delivered=delivered if channel.online else 0,
            failed=channel.failed,
            spooled=channel.produced,
            last_error=channel.last_error,
            offline=not channel.online,
        )

    @property
    def finished(self) -> bool:
        return self._finished is not None

    @property
    def step(self) -> int:
        """The step the next ``log()`` without ``step=`` uses."""
        return self._step

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        exit_code, status = exit_status(exc_type, exc)
        self.finish(exit_code=exit_code, status=status)

    def __repr__(self) -> str:
        return f"<Run {self.project}/{self.id} name={self.name!r} mode={self.mode}>"

    def _emit(self, type_name: str, body: dict[str, Any]) -> None:
        if self._finished is None:
            self._worker.submit((self._channel, type_name, _time(), _static_body, body))

    def _after_fork_in_child(self) -> None:
        self._forked = True
        self._warned_finished = False
        self._finished = FinishResult(0, 0, 0, 0, "run belongs to the parent process")


class DisabledRun(Run):
    """What ``mode="disabled"`` returns: the same surface, doing nothing at all."""

    def __init__(self, settings: Settings, *, id: str | None = None, name: str | None = None,
                 config: Mapping[str, Any] | None = None, **_: Any) -> None:  # fmt: skip
        self.settings = settings
        self.project = settings.project
        self.mode = "disabled"
        self.id = id or settings.run_id or new_run_id()
        self.name = name or self.id
        self.group = self.job_type = self.notes = None
        self._tags: list[str] = []
        self._finished = None
        self._step = 0
        self._refusals = Refusals()
        self._submitted = self._observed = 0
        self._summary_kinds = {}
        self.config = RunConfig(self, _config_dict(config, self._refusals))
        self.summary = RunSummary(self)

    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        return None

    def _emit(self, type_name: str, body: dict[str, Any]) -> None:
        return None

    def log_artifact(self, path_or_uri: Any, name: str | None = None, type: str = "") -> None:
        return None

    def define_metric(self, name: str, summary: SummaryKind = "last") -> None:
        return None

    def finish(self, exit_code: int = 0, status: str | None = None) -> FinishResult:
        if self._finished is None:
            self._finished = FinishResult(0, 0, 0, 0)
            _unregister(self)
        return self._finished


def _safe_str(value: Any) -> str:
    if type(value) is str:
        return value
    try:
        text = str(value)
    except Exception:
        return f"<{type(value).__name__} whose str() raised>"
    return text if type(text) is str else f"<{type(value).__name__}>"


def _repair(text: str) -> str:
    return text if is_text(text) else repair_text(text)


def _is_name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_NAME_LENGTH and is_text(value)


def _text_or_none(value: Any, what: str, refusals: Refusals) -> str | None:
    """``name``, ``group``, ``job_type``, ``notes``: text or None, never a reason to lose the
    run_started event (the schema types them as strings)."""
    if value is None or (type(value) is str and is_text(value)):
        return value
    if type(value) is str:
        refusals.note(what, f"{what} is not valid Unicode text (a lone surrogate); stored "
                      "with its lone surrogates escaped as \\udXXX", "name")  # fmt: skip
        return repair_text(value)
    text = _repair(_safe_str(value))
    refusals.note(what, f"{what} must be a string, not {type(value).__name__}; stored as "
                  f"{text[:60]!r}", "name")  # fmt: skip
    return text


def _clean_tags(tags: Any, refusals: Refusals) -> list[str]:
    """Tags as the schema takes them (1 to 512 characters of text each); others refused."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    try:
        given = list(tags)
    except Exception:
        refusals.refuse("tags", f"tags must be a list of strings, not {type(tags).__name__}",
                        "name")  # fmt: skip
        return []
    out = []
    for tag in given:
        text = _repair(_safe_str(tag))
        if 0 < len(text) <= MAX_NAME_LENGTH:
            if text is not tag and type(tag) is not str:
                refusals.note(f"tag {text[:60]!r}", f"tag {text[:60]!r} is a "
                              f"{type(tag).__name__}; stored as its text", "name")  # fmt: skip
            elif text is not tag:
                refusals.note(f"tag {text[:60]!r}", f"tag {text[:60]!r} is not valid Unicode "
                              "text; stored with its lone surrogates escaped", "name")  # fmt: skip
            out.append(text)
        else:
            refusals.refuse(f"tag {text[:60]!r}", f"a tag must have 1 to {MAX_NAME_LENGTH} "
                            "characters", "name")  # fmt: skip
    return out


def _config_dict(config: Any, refusals: Refusals) -> dict[str, Any]:
    """``init(config=...)`` as a JSON dict: a mapping, or an object with attributes (such as
    ``argparse.Namespace``); never raises (what cannot be read is warned about and left out)."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        try:
            config = vars(config)
        except TypeError:
            refusals.refuse("config", f"config must be a dict, not {type(config).__name__}; "
                            "it is left out", "config")  # fmt: skip
            return {}
    converted = to_json(config, refusals, "config")
    if not isinstance(converted, dict):  # the mapping could not be read at all
        return {}
    return converted


def exit_status(exc_type: type[BaseException] | None, exc: BaseException | None) -> tuple[int, str]:
    """The (exit code, status) a run ends with when ``exc`` ends the program."""
    if exc_type is None:
        return 0, "finished"
    if issubclass(exc_type, KeyboardInterrupt):
        return 130, "killed"
    if issubclass(exc_type, SystemExit):
        code = exc.code if isinstance(exc, SystemExit) else 0
        exit_code = code if isinstance(code, int) else (0 if code is None else 1)
        return exit_code, "finished" if exit_code == 0 else "failed"
    return 1, "failed"


# --- config and summary ---------------------------------------------------------------------------
class RunConfig(MutableMapping[str, Any]):
    """The run's config: a dict whose changes are recorded as config-updated events.

    Attribute access works too (``run.config.lr``), as in wandb.
    """

    def __init__(self, run: Run, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_values", values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._values[key]
        self._run._emit("config_updated", {"config": {key: None}})  # merge patch: null removes

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set several keys; one event records all of them. Values become JSON as
        :func:`runstream.producers.values.to_json` says (never raises for a value)."""
        changes = to_json(dict(*args, **kwargs), self._run._refusals, "config")
        if not changes:
            return
        self._values.update(changes)
        self._run._emit("config_updated", {"config": changes})

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"RunConfig({self._values!r})"


class RunSummary(MutableMapping[str, Any]):
    """The run's summary as this session sees it: by default the last value of each metric
    logged (or the min, max or mean chosen with ``define_metric``); keys set explicitly win.

    Only explicit keys (``run.summary[k] = v``, ``update``) are sent, as ``summary_updated``
    events (and once more at ``finish()``). Values derived from metric points are computed
    where every point is, in ClickHouse (``run_summaries``) and the processors, so that a
    resumed run, whose SDK only saw its own session, does not overwrite them.

    Reads see every value logged before them: they wait (at most
    :data:`SUMMARY_READ_WAIT_SECONDS`) for the worker to have taken what was queued first.
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._explicit: dict[str, Any] = {}
        self._last: dict[str, float] = {}
        # Only metrics given another summary by define_metric pay for min/max/mean tracking.
        self._aggregates: dict[str, list[float]] = {}  # name -> [min, max, sum, count]
        self._kind_of: dict[str, SummaryKind] = {}

    def _observe(self, metrics: Mapping[str, float]) -> None:
        # Runs on the worker thread with the values it just encoded.
        self._last.update(metrics)
        kinds = self._run._summary_kinds
        if not kinds:
            return
        kind_of = self._kind_of
        aggregates = self._aggregates
        for name, value in metrics.items():
            kind = kind_of.get(name)
            if kind is None:
                kind = kind_of[name] = _summary_kind(name, kinds)
            if kind == "last":
                continue
            entry = aggregates.get(name)
            if entry is None:
                aggregates[name] = [value, value, value, 1.0]
                continue
            entry[0] = min(entry[0], value)
            entry[1] = max(entry[1], value)
            entry[2] += value
            entry[3] += 1.0

    def _sync(self) -> None:
        """Wait until the worker has seen every metrics event queued before this read."""
        run = self._run
        if run._observed >= run._submitted or run._finished is not None:
            return
        seen = threading.Event()
        run._worker.submit((run._channel, "summary_read", _time(), _barrier_body, seen))
        run._worker._wake.set()  # do not wait for the worker's next tick
        seen.wait(SUMMARY_READ_WAIT_SECONDS)

    def _derived(self) -> dict[str, float]:
        self._sync()
        out = dict(self._last)
        for name, (low, high, total, count) in list(self._aggregates.items()):
            kind = self._kind_of.get(name, "last")
            out[name] = {"min": low, "max": high, "mean": total / count}.get(kind, out[name])
        return out

    def _final(self) -> dict[str, Any]:
        """What the final ``summary_updated`` carries: the explicit keys only."""
        return dict(self._explicit)

    def __getitem__(self, key: str) -> Any:
        if key in self._explicit:
            return self._explicit[key]
        return self._derived()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._explicit[key]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._derived(), **self._explicit})

    def __len__(self) -> int:
        return len({**self._derived(), **self._explicit})

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set keys explicitly; one ``summary_updated`` event records them. Keys must be
        names of 1 to 512 characters (the schema's); values become JSON like config values."""
        refusals = self._run._refusals
        converted = to_json(dict(*args, **kwargs), refusals, "summary")
        changes: dict[str, Any] = {}
        for key, value in converted.items():
            if 0 < len(key) <= MAX_NAME_LENGTH:
                changes[key] = value
            else:
                refusals.refuse(key[:60], f"a summary key must have 1 to {MAX_NAME_LENGTH} "
                                "characters", "name")  # fmt: skip
        if not changes:
            return
        self._explicit.update(changes)
        self._run._emit("summary_updated", {"summary": changes})

    def __repr__(self) -> str:
        return f"RunSummary({dict(self)!r})"


SUMMARY_READ_WAIT_SECONDS = 2.0
"""How long a read of ``run.summary`` waits, at most, for the worker to see earlier logs."""


def _summary_kind(name: str, kinds: Mapping[str, SummaryKind]) -> SummaryKind:
    kind = kinds.get(name)
    if kind is not None:
        return kind
    for pattern, chosen in kinds.items():
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return chosen
    return "last"


# --- body builders: run on the worker thread --------------------------------------------------
def _metrics_body(step: int, data: dict[str, Any], run: Run) -> dict[str, Any] | None:
    # Training loops log the same names every step: once a set of names was checked, the same
    # names with finite float values (one C-level sum says so) need no per-name work.
    try:
        if data.keys() == run._checked_names and _finite_floats(data.values()):
            run.summary._observe(data)
            return {"step": step, "metrics": data}
        metrics = flatten_metrics(data, run._refusals)
        if metrics is data:
            run._checked_names = set(data)
        if not metrics:
            return None
        run.summary._observe(metrics)
        return {"step": step, "metrics": json_safe_metrics(metrics)}
    finally:
        run._observed += 1  # after _observe: a summary read waiting for this sees its values


def _barrier_body(seen: threading.Event) -> None:
    # Queued by a summary read: everything queued before it has been built when this runs.
    seen.set()


_FLOATS = {float}


def _finite_floats(values: Any) -> bool:
    # Exactly float (not bool, not numpy or torch scalars), then one C-level sum: inf - inf
    # and nan - nan are nan, so the difference is 0.0 only when every value is finite.
    if set(map(type, values)) != _FLOATS:
        return False
    total = sum(values)
    return bool(total - total == 0.0)


def _static_body(body: dict[str, Any]) -> dict[str, Any]:
    return body


def _final_summary_body(summary: RunSummary) -> dict[str, Any] | None:
    final = summary._final()  # explicit keys only; derived ones are computed downstream
    return {"summary": final} if final else None


def _artifact_body(target: str, name: str | None, kind: str, run: Run) -> dict[str, Any] | None:
    scheme = urlsplit(target).scheme
    if scheme and len(scheme) > 1 and scheme != "file":  # a remote URI: nothing to read here
        digest = "uri-sha256:" + hashlib.sha256(target.encode()).hexdigest()
        return {"name": name or target.rstrip("/").rsplit("/", 1)[-1], "type": kind,
                "digest": digest, "size": 0, "uri": target}  # fmt: skip
    path = Path(target.removeprefix("file://")).expanduser()
    try:
        digest, size = _digest(path)
    except OSError as exc:
        run._refusals.refuse(str(path), f"artifact cannot be read: {exc}")
        return None
    return {"name": name or path.name, "type": kind, "digest": f"sha256:{digest}", "size": size,
            "uri": path.resolve().as_uri()}  # fmt: skip


def _digest(path: Path) -> tuple[str, int]:
    """sha256 of a file, or of a directory's files (names and contents, sorted)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files and not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    h = hashlib.sha256()
    size = 0
    for file in files:
        if file is not path:
            h.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    return h.hexdigest(), size


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


# --- module-level API and the registry of active runs -------------------------------------------
run: Run | None = None
"""The run most recently started with :func:`init` and not yet finished."""

_active: list[Run] = []
_active_lock = threading.Lock()


def active_runs() -> list[Run]:
    with _active_lock:
        return list(_active)


def _register(new: Run) -> None:
    global run
    from runstream.producers import hooks

    hooks.install()
    with _active_lock:
        _active.append(new)
        run = new


def _unregister(done: Run) -> None:
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
    resume: Literal["allow", "must", "never"] | None = None,
    mode: Mode | None = None,
    dir: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
) -> Run:
    """Start a run. Arguments override ``RUNSTREAM_*`` environment variables and defaults.

    ``mode``: ``online`` (default) delivers to Kafka through the local spool; ``offline`` only
    writes the spool (deliver later with ``runstream sync``); ``disabled`` does nothing.
    ``resume`` with ``id``: ``allow`` continues run ``id`` if it exists, ``must`` requires it,
    ``never`` refuses an existing one. In a ``torch.distributed`` job only rank 0 logs, unless
    ``group`` is given: then every rank logs a run of that group.
    """
    base = settings if settings is not None else Settings.load()
    resolved = base.with_overrides(project=project, mode=mode, dir=dir, resume=resume, run_id=id)
    rank = _distributed_rank()
    if resolved.mode == "disabled" or (rank > 0 and group is None):
        if rank > 0 and resolved.mode != "disabled":
            logger.info(
                "runstream: rank %d does not log (pass group= to log from every rank)", rank
            )
        disabled = DisabledRun(resolved, id=id, name=name, config=config)
        with _active_lock:
            _active.append(disabled)
        return disabled
    if rank > 0 and name is None:
        name = f"{group}-rank{rank}"
    return Run(
        resolved,
        name=name,
        config=config,
        tags=tags,
        group=group,
        job_type=job_type,
        notes=notes,
        id=id,
    )


def _distributed_rank() -> int:
    # torchrun and most launchers set RANK; reading it avoids importing torch.
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
