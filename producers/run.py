"""The public SDK surface: ``runstream.init`` and :class:`Run`.

Everything here runs in the caller's thread, so each method does the least it can: capture the
values, append a tuple to the worker's queue, return. Encoding, disk and network I/O happen on
the worker (``producers/worker.py``).
"""

from __future__ import annotations

import logging
import operator
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from runstream.errors import RunstreamError
from runstream.producers.bodies import (
    artifact_body,
    environment,
    final_summary_body,
    metrics_body,
    static_body,
)
from runstream.producers.inputs import (
    clean_tags,
    config_dict,
    is_name,
    repair,
    safe_str,
    short_repr,
    text_or_none,
)
from runstream.producers.mappings import RunConfig, RunSummary, SummaryKind
from runstream.producers.spool import RunSpool
from runstream.producers.values import INT64_MAX, MAX_NAME_LENGTH, Refusals
from runstream.producers.worker import RunChannel, Worker, get_worker, new_spool_state
from runstream.schemas import new_run_id
from runstream.settings import Mode, Settings

logger = logging.getLogger("runstream")

AlertLevel = Literal["info", "warn", "error"]
_LEVELS = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}
_time = time.time
LOCAL_FINISH_SECONDS = 60.0
"""Most seconds finish() waits for the worker to spool the run's queued events (local disk)."""


class ResumeError(RunstreamError):
    """A run could not be resumed (or must not be) as asked."""


@dataclass(frozen=True)
class FinishResult:
    """What happened to a run's events by the time :meth:`Run.finish` returned.

    Counts are of events numbered by this process for the run (an earlier process's leftovers,
    replayed after a resume, are not counted). Every event is in exactly one of: delivered,
    failed, :attr:`pending` (in the spool, for ``runstream sync``), :attr:`lost`; dropped ones
    were never numbered.
    """

    produced: int
    """Events numbered for the run (sent, spooled or both); dropped ones are not included."""
    delivered: int
    """Acknowledged by Kafka (online runs)."""
    failed: int
    """Refused by Kafka for good (``last_error`` says why); not kept for ``sync`` either."""
    spooled: int
    """Written to the local spool."""
    last_error: str | None = None
    """The last error from Kafka, or from the spool's disk when nothing came from Kafka."""
    offline: bool = False
    dropped: int = 0
    """Events refused for lack of room: the spool was at ``spool_max_mb`` while Kafka was not
    keeping up (or, with the spool unwritable, the memory bound was reached). Only metric,
    heartbeat and system-metric events are dropped; never ``run_started``/``run_finished``."""
    not_spooled: int = 0
    """Of ``produced``: never written to the spool (disk full or unwritable, or the spool at its
    bound while Kafka took them); sent to Kafka from memory."""
    lost: int = 0
    """Of ``not_spooled``: not acknowledged by Kafka when finish() returned. They are in no
    spool, so ``runstream sync`` cannot deliver them; they are lost when this process exits."""
    incomplete: bool = False
    """The worker had not yet spooled every event of the run when finish() returned (it waits
    at most ``max(finish_timeout, 60)`` seconds for that): the counts are a snapshot."""

    @property
    def pending(self) -> int:
        """Events kept in the local spool for ``runstream sync``."""
        return self.produced - self.delivered - self.failed - self.lost

    @property
    def ok(self) -> bool:
        """True only when nothing was refused, dropped or lost and every event was delivered
        (offline runs: every event is in the spool, for ``runstream sync``)."""
        if self.failed or self.dropped or self.lost or self.incomplete:
            return False
        return self.offline or self.pending == 0


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
        self.group = text_or_none(group, "group", self._refusals)
        self.job_type = text_or_none(job_type, "job_type", self._refusals)
        self.notes = text_or_none(notes, "notes", self._refusals)
        self._step = 0
        self._pending: dict[str, Any] | None = None
        self._pending_step = 0
        self._finished: FinishResult | None = None
        self._forked = False
        self._finish_lock = threading.Lock()
        self._warned_finished = False
        # Metrics events at a step below the highest: with _step, it tells a summary read
        # whether anything was logged since the worker last caught up (no counter on log()).
        self._lower = 0
        self._summary_kinds: dict[str, SummaryKind] = {}
        self._checked_names: set[str] = set()
        self._worker = worker or get_worker()
        # log()'s hot path: one attribute instead of two (the worker object lives as long as
        # the process; after a fork the child's runs are no-ops).
        self._submit = self._worker.submit

        resumed_from = self._resolve_id(id)
        self.name = text_or_none(name, "name", self._refusals) or self.id
        self._tags = clean_tags(tags, self._refusals)
        self.config = RunConfig(self, config_dict(config, self._refusals))
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
                    "environment": environment(),
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
            pending = self._pending
            if step is None:
                step = self._step if pending is None else self._pending_step
            elif type(step) is not int or step < 0 or step > 9223372036854775807:  # INT64_MAX
                # (a literal: a constant costs less than a global lookup on this hot path)
                step = self._check_step(step)
                if step is None:
                    return
            if pending is None:
                if commit:
                    # dict() first: what it cannot copy (not a mapping) changes nothing.
                    copy = dict(data)
                    if step >= self._step:
                        self._step = step + 1
                    else:
                        self._lower += 1
                    self._submit(
                        (self._channel, "metrics_logged", _time(), metrics_body, step, copy, self)
                    )
                    return
                self._pending = dict(data)
                self._pending_step = step
                return
            if step != self._pending_step:
                copy = dict(data)
                self._send_pending()
                self._pending = copy
                self._pending_step = step
            else:
                pending.update(data)
            if commit:
                self._send_pending()
        except Exception as exc:  # log() must never stop a training loop
            try:
                self._refuse_call(data, exc)
            except Exception:  # an exception whose str() raises, say: still counted
                self._refusals.tally("call")

    def _send_pending(self) -> None:
        data, step = self._pending, self._pending_step
        self._pending = None
        if step >= self._step:
            self._step = step + 1
        else:
            self._lower += 1
        self._worker.submit(
            (self._channel, "metrics_logged", _time(), metrics_body, step, data, self)
        )

    def _refuse_call(self, data: Any, exc: Exception) -> None:
        if not isinstance(data, Mapping):
            # dict() also takes (name, value) pairs; anything else is not what log() takes.
            reason = (
                f"log() takes a dict of metric names to values, not a {type(data).__name__}; "
                "the call is ignored"
            )
        else:
            reason = f"the call failed ({type(exc).__name__}: {exc}); it is ignored"
        self._refusals.refuse(f"log({type(data).__name__})", reason, "call")

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
        # One warning per kind of bad step (the reason), however many values of that kind.
        self._refusals.note(
            "step",
            f"run {self.id}: not logging 'step': {reason}; calls with such a step are ignored "
            f"(first seen: step={short_repr(step)})",
            "step",
            key=reason,
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

    @property
    def refused_by_kind(self) -> dict[str, int]:
        """:attr:`refused` by kind: ``step``, ``call``, ``after_finish``, ``metric``,
        ``duplicate``, ``config``, ``name``, ``size``, ``event`` (docs/sdk.md, the table)."""
        return dict(self._refusals.by_kind)

    # --- the rest of the surface ---------------------------------------------------------------
    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self._tags)

    @tags.setter
    def tags(self, tags: list[str] | tuple[str, ...]) -> None:
        self._tags = clean_tags(tags, self._refusals)
        self._emit("tags_updated", {"tags": list(self._tags)})

    def define_metric(self, name: str, summary: SummaryKind = "last") -> None:
        """Choose which value summarises ``name`` (or every name matching ``prefix*``)."""
        if not is_name(name):
            self._refusals.refuse(
                safe_str(name)[:60],
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
        title = repair(safe_str(title))[:1024] or "(untitled)"
        self._emit(
            "alert_raised", {"title": title, "text": repair(safe_str(text)), "level": resolved}
        )

    def log_artifact(
        self, path_or_uri: str | os.PathLike[str], name: str | None = None, type: str = "artifact"
    ) -> None:
        """Record an artifact's metadata (digest, size, uri). Files are read on the worker."""
        target = os.fspath(path_or_uri)
        self._worker.submit(
            (self._channel, "artifact_logged", _time(), artifact_body, target, name, type, self)
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
            code = int(exit_code) if isinstance(exit_code, int) else process_exit_code(exit_code)
            if status is None:
                status = status_for(code)
            # Built on the worker, after every metric logged before it has been seen there.
            self._worker.submit(
                (self._channel, "summary_updated", _time(), final_summary_body, self.summary)
            )
            self._emit("run_finished", {"exit_code": code, "status": status})
            # First every event is spooled and handed to the producer (local work: the counts
            # are then final), then Kafka has what is left of finish_timeout to acknowledge.
            started = time.monotonic()
            timeout = self.settings.finish_timeout
            processed = self._worker.close_channel(
                self._channel, max(timeout, LOCAL_FINISH_SECONDS)
            )
            self._worker.flush(timeout - (time.monotonic() - started), self._channel)
            self._finished = self._result(processed)
        result = self._finished
        _unregister(self)
        _report(self, result)
        return result

    def _result(self, processed: bool = True) -> FinishResult:
        channel = self._channel
        produced = channel.produced
        failed = min(produced, channel.failed)
        delivered = min(produced, channel.acked) - failed if channel.online else 0
        error = channel.last_error
        if error is None and channel.not_spooled:
            error = channel.spool_error
        if not processed:
            error = (
                f"the SDK's worker had not spooled all of the run's events after "
                f"{max(self.settings.finish_timeout, LOCAL_FINISH_SECONDS):g}s (a stuck disk?): "
                "the counts are a snapshot"
            )
        return FinishResult(
            produced=produced,
            delivered=max(0, delivered),
            failed=failed,
            spooled=channel.spooled,
            last_error=error,
            offline=not channel.online,
            dropped=channel.dropped,
            not_spooled=channel.not_spooled,
            lost=min(channel.lost, produced),
            incomplete=not processed,
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
            self._worker.submit((self._channel, type_name, _time(), static_body, body))

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
        self._lower = 0
        self._summary_kinds = {}
        self.config = RunConfig(self, config_dict(config, self._refusals))
        self.summary = RunSummary(self)
        self.summary._synced = (0, 0)  # nothing is ever queued: reads never wait

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


def _report(run: Run, result: FinishResult) -> None:
    """One line that says exactly what happened to the run's events, if anything went wrong."""
    settings = run.settings
    parts = []
    if not result.offline:
        parts.append(f"{result.delivered} of {result.produced} events delivered")
    else:
        parts.append(f"offline: {result.spooled} of {result.produced} events in the spool")
    if result.pending and not result.offline:
        parts.append(
            f"{result.pending} not delivered within {settings.finish_timeout:g}s, kept in the "
            f"spool: deliver them with 'runstream sync {settings.dir}'"
        )
    if result.not_spooled:
        channel = run._channel
        why = channel.spool_error or f"the spool was at spool_max_mb={settings.spool_max_mb:g}"
        parts.append(f"{result.not_spooled} could not be written to the spool ({why})")
    if result.lost:
        parts.append(
            f"{result.lost} of those are neither delivered nor spooled: they are lost when "
            "this process exits"
        )
    if result.failed:
        parts.append(f"{result.failed} refused by Kafka ({result.last_error})")
    if result.dropped:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(run._channel.dropped_types.items()))
        reasons = "; ".join(run._channel.drop_reasons)
        parts.append(f"{result.dropped} dropped for lack of room ({kinds}; {reasons})")
    if result.ok:
        if result.offline:
            logger.info(
                "runstream: run %s is offline: %d events in %s; deliver them with "
                "'runstream sync %s'",
                run.id,
                result.produced,
                settings.dir,
                settings.dir,
            )
        return
    logger.warning("runstream: run %s: %s", run.id, "; ".join(parts))


def exit_status(exc_type: type[BaseException] | None, exc: BaseException | None) -> tuple[int, str]:
    """The (exit code, status) a run ends with when ``exc`` ends the program (None: it ended
    normally). The exit code is what the shell will see:

    - ``SystemExit(code)``: ``None`` is 0, an int is taken as the OS takes it (0-255 on POSIX:
      ``sys.exit(256)`` exits 0, ``sys.exit(-1)`` 255), anything else (a message) is 1;
    - ``KeyboardInterrupt``: 130 (Python dies of SIGINT); any other exception: 1.

    The status follows from the code (:func:`status_for`).
    """
    if exc_type is None:
        return 0, "finished"
    if issubclass(exc_type, KeyboardInterrupt):
        return 128 + signal.SIGINT, "killed"
    if issubclass(exc_type, SystemExit):
        code = process_exit_code(exc.code if isinstance(exc, SystemExit) else None)
        return code, status_for(code)
    return 1, "failed"


def process_exit_code(code: object) -> int:
    """The process exit status Python gives for ``sys.exit(code)``."""
    if code is None:
        return 0
    if not isinstance(code, int):
        return 1  # Python prints the message and exits with 1
    if os.name != "posix":
        return code if -(2**31) <= code < 2**31 else -1
    return code & 0xFF if -(2**63) <= code < 2**63 else 255


def status_for(exit_code: int) -> str:
    """``finished`` for 0; ``killed`` for 128+N where N is a signal (the shell's convention
    for "ended by signal N", also what a SIGTERM handler calling ``sys.exit(143)`` means);
    ``failed`` otherwise."""
    if exit_code == 0:
        return "finished"
    if 128 < exit_code < 128 + signal.NSIG:
        return "killed"
    return "failed"


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
