"""One training run, :class:`Run`: what training code calls on it (``log``, ``config``,
``summary``, ``alert``, ``finish``...).

Starting one (``runstream.init``) is ``producers/start.py``; how it ends (:class:`FinishResult`,
the exit status) is ``producers/ending.py``; the registry of active runs (``runstream.run``) is
``producers/active.py``.

Everything here runs in the caller's thread, so each method does the least it can: capture the
values, append a tuple to the worker's queue, return. Encoding, disk and network I/O happen on
the worker (``producers/worker.py``).
"""

from __future__ import annotations

import logging
import operator
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

from runstream.producers import active, artifacts
from runstream.producers.bodies import (
    environment,
    final_summary_body,
    metrics_body,
    static_body,
)
from runstream.producers.details import RunDetails
from runstream.producers.ending import (
    FinishResult,
    exit_status,
    process_exit_code,
    report,
    status_for,
)
from runstream.producers.histograms import take_loggables
from runstream.producers.inputs import (
    clean_tags,
    config_dict,
    repair,
    safe_str,
    short_repr,
    text_or_none,
)
from runstream.producers.mappings import RunConfig, RunSummary, SummaryKind
from runstream.producers.resume import ResumeError, resolve_position
from runstream.producers.spool import RunSpool
from runstream.producers.values import (
    INT64_MAX,
    Refusals,
    is_text,
    snapshot_metrics,
)
from runstream.producers.worker import RunChannel, Worker, get_worker, new_spool_state
from runstream.schemas import new_run_id
from runstream.settings import Settings

# FinishResult and the exit-status helpers are imported from here too (moved to ending.py).
__all__ = [
    "LOCAL_FINISH_SECONDS",
    "AlertLevel",
    "FinishResult",
    "ResumeError",
    "Run",
    "exit_status",
    "process_exit_code",
    "status_for",
]

logger = logging.getLogger("runstream")

AlertLevel = Literal["info", "warn", "error"]
_LEVELS = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}
_time = time.time
_PLAIN_NUMBERS = frozenset((float, int))  # values log() need not snapshot: immutable numbers
LOCAL_FINISH_SECONDS = 60.0
"""Most seconds finish() waits for the worker to spool the run's queued events (local disk)."""


MAX_ALERT_TITLE = 1024
"""Characters in an alert title (the schema's ``alert_raised.title``)."""
_CALL_OF = {"config_updated": "a config change", "summary_updated": "a summary change",
            "tags_updated": "setting tags", "metric_defined": "define_metric()",
            "alert_raised": "alert()", "run_updated": "setting name or notes"}  # fmt: skip


def _alert_text(value: Any, what: str, refusals: Refusals) -> str:
    """An alert's title or text as valid Unicode text; what is not is changed, warned, counted."""
    if value is None and what == "text":
        return ""
    if type(value) is not str:
        text = repair(safe_str(value))
        refusals.note(f"alert {what}", f"an alert {what} must be a str, not "
                      f"{type(value).__name__}; sent as its str() {text[:40]!r}", "alert",
                      key=f"{what} type")  # fmt: skip
        return text
    if is_text(value):
        return value
    refusals.note(f"alert {what}", f"an alert {what} is not valid Unicode text (a lone "
                  "surrogate); sent with its lone surrogates escaped as \\udXXX", "alert",
                  key=f"{what} text")  # fmt: skip
    return repair(value)


class Run(RunDetails):
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
        self._notes = text_or_none(notes, "notes", self._refusals)
        self._step = 0
        self._pending: dict[str, Any] | None = None
        self._pending_step = 0
        self._finished: FinishResult | None = None
        self._forked = False
        # Re-entrant: a SIGTERM handler (producers/hooks.py) may call finish() on the thread
        # already inside it; see finish().
        self._finish_lock = threading.RLock()
        self._finishing = False
        self._warned_finished = False
        # Metrics events at a step below the highest: with _step, it tells a summary read
        # whether anything was logged since the worker last caught up (no counter on log()).
        self._lower = 0
        self._summary_kinds: dict[str, SummaryKind] = {}
        self._step_metrics = None  # define_metric(step_metric=): details.py (an instance
        # attribute: log() reads it on every call without step=)
        self._checked_names: set[str] = set()
        self._worker = worker or get_worker()
        # log()'s hot path: one attribute instead of two (the worker object lives as long as
        # the process; after a fork the child's runs are no-ops).
        self._submit = self._worker.submit

        self.id = id or settings.run_id or new_run_id()
        resumed_from = resolve_position(settings, self.id, id_given=bool(id or settings.run_id))
        self._name = text_or_none(name, "name", self._refusals) or self.id
        self._start_time = time.time()
        self._resumed = resumed_from is not None and resumed_from[2]
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
        if resumed_from is None or not resumed_from[2]:
            self._emit(
                "run_started",
                {
                    "name": self._name,
                    "config": dict(self.config),
                    "tags": self._tags,
                    "group": self.group,
                    "job_type": self.job_type,
                    "notes": self._notes,
                    "environment": environment(),
                },
            )
        else:
            self._emit("run_resumed", {"step": self._step})
            if len(self.config):
                self._emit("config_updated", {"config": dict(self.config)})
        active.register(self)

    # --- logging ----------------------------------------------------------------------------
    def log(
        self,
        data: Mapping[str, Any] | None = None,
        step: int | None = None,
        commit: bool = True,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Record metric values at ``step`` (default: one past the highest step logged so far).

        ``data``: metric names to numbers (Python, numpy and torch scalars, one-element arrays
        and tensors), nested dicts becoming ``a/b`` names. The values are taken as they are at
        the call: changing them afterwards (a dict, a numpy array updated in place) changes
        nothing stored. ``step`` is anything ``operator.index()`` takes (Python, numpy and torch
        integers) from 0 to 2**63-1 (ClickHouse's Int64); a step lower than the highest is
        stored like any other. ``commit=False`` keeps collecting values for the same step until
        a call with ``commit=True`` (or with another step) sends them as one event. Other
        arguments are ignored (wandb's ``sync=`` silently, others with a warning). Never raises:
        what cannot be stored is refused with one warning per kind and counted (:attr:`refused`).
        """
        try:
            if args or kwargs:
                self._extra_arguments(args, kwargs)
            if self._finished is not None:
                self._log_after_finish()
                return
            if step is None and self._step_metrics is not None:  # define_metric(step_metric=)
                parts = self._step_metrics.split(data, self._refusals)  # type: ignore[arg-type]
                if parts is not None:
                    if len(parts) > 1:  # two step metrics, two steps: one event each
                        self._log_parts(parts, commit)
                        return
                    step = parts[0][0]
            pending = self._pending
            if step is None:
                if pending is not None:
                    step = self._pending_step
                else:
                    step = self._step
                    if step > 9223372036854775807:  # INT64_MAX, after step=2**63-1
                        self._refuse_step_after_max()
                        return
            elif type(step) is not int or step < 0 or step > 9223372036854775807:  # INT64_MAX
                # (a literal: a constant costs less than a global lookup on this hot path)
                step = self._check_step(step)
                if step is None:
                    return
            # dict() first: what it cannot copy (not a mapping) changes nothing. Then every
            # value as it is now (the worker reads them later): flat Python floats and ints
            # (one C-level check says so) are that already; anything else is snapshotted.
            copy = dict(data)  # type: ignore[arg-type]
            # One C-level sum tells the common case, at under half the cost of checking each
            # value's type: it stays a plain float or int only when every value is one (or a
            # bool, or a number type whose __radd__ gives a float: Fraction; all immutable).
            # numpy and torch values, arrays, nested dicts, text and ints beyond a float's
            # range all make it something else, or raise: those are snapshotted.
            try:
                plain = type(sum(copy.values())) in _PLAIN_NUMBERS
            except Exception:
                plain = False
            if not plain:
                media: list[Any] = []
                copy = snapshot_metrics(copy, media=media)
                if media:  # runstream.Histogram (its own event), wandb media (refused)
                    copy = take_loggables(self, copy, step)
            if pending is None:
                if commit:
                    if step >= self._step:
                        self._step = step + 1
                    else:
                        self._lower += 1
                    self._submit(
                        (self._channel, "metrics_logged", _time(), metrics_body, step, copy, self)
                    )
                    return
                self._pending = copy
                self._pending_step = step
                return
            if step != self._pending_step:
                self._send_pending()
                self._pending = copy
                self._pending_step = step
            else:
                pending.update(copy)
            if commit:
                self._send_pending()
        except Exception as exc:  # log() must never stop a training loop
            try:
                self._refuse_call(data, exc)
            except Exception:  # an exception whose str() raises, say: still counted
                self._refusals.tally("call")

    def _log_parts(self, parts: list[tuple[int | None, dict[str, Any]]], commit: bool) -> None:
        """One log() call whose keys have different step metrics: each part at its step
        (``None``: runstream's counter, as a log() without step=)."""
        for given, part in parts:
            step = given
            if step is None:
                step = self._pending_step if self._pending is not None else self._step
                if step > INT64_MAX:
                    self._refuse_step_after_max()
                    continue
            self.log(part, step, commit)

    def _extra_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Arguments log() does not take: ignored, each warned about once and counted."""
        if "sync" in kwargs:  # wandb's, deprecated there and without effect: accepted silently
            kwargs = {k: v for k, v in kwargs.items() if k != "sync"}
        for name in kwargs:
            self._refusals.note(
                f"log({name}=)",
                f"run {self.id}: log() has no argument {safe_str(name)[:60]!r}; it is ignored "
                "(the values are logged without it)",
                "argument",
            )
        if len(args) > 1:  # the first is wandb's sync, by position: accepted silently
            self._refusals.note(
                "log(*args)",
                f"run {self.id}: log() takes (data, step, commit); {len(args) - 1} more "
                "positional argument(s) are ignored (the values are logged without them)",
                "argument",
            )

    def _refuse_step_after_max(self) -> None:
        self._refusals.note(
            "step",
            f"run {self.id}: not logging: a log() without step= would be at step "
            f"{self._step}, past 2**63-1 (ClickHouse Int64), the highest step; calls without "
            "step= are ignored from now on (pass step= explicitly)",
            "step",
            key="after the highest step",
        )

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

    def _log_after_finish(self, call: str = "log()") -> None:
        self._refusals.tally("after_finish")
        if not self._warned_finished:
            self._warned_finished = True
            where = "in a forked child process" if self._forked else "after finish()"
            logger.warning(
                "runstream: run %s: %s %s is ignored, as is every later call (warned once)%s",
                self.id,
                call,
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
        ``duplicate``, ``config``, ``name``, ``size``, ``event``, ``argument``, ``alert``,
        ``artifact``, ``media`` (docs/sdk.md, the table)."""
        return dict(self._refusals.by_kind)

    # --- the rest of the surface ---------------------------------------------------------------
    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self._tags)

    @tags.setter
    def tags(self, tags: list[str] | tuple[str, ...]) -> None:
        self._tags = clean_tags(tags, self._refusals)
        self._emit("tags_updated", {"tags": list(self._tags)})

    def alert(self, title: str, text: str = "", level: Any = "info") -> None:
        """Raise an alert (delivered to the configured webhooks by the processors).

        ``title``: text, at most 1,024 characters (longer is cut); ``text``: any length (cut to
        fit one event); ``level``: ``info``, ``warn`` (or ``warning``) or ``error``, any case, or
        an enum of those (wandb's ``AlertLevel``). Anything else is changed (a title or text
        that is not a str becomes its ``str()``, another level ``info``) with one warning per
        kind, and counted (``refused_by_kind["alert"]``). Never raises.
        """
        try:
            self._alert(title, text, level)
        except Exception as exc:  # whatever a foreign object's methods raise
            self._refusals.refuse("alert", f"the call failed ({type(exc).__name__}); it is "
                                  "ignored", "alert")  # fmt: skip

    def _alert(self, title: Any, text: Any, level: Any) -> None:
        if self._finished is not None:
            self._log_after_finish("alert()")
            return
        refusals = self._refusals
        raw = getattr(level, "value", level)  # wandb.AlertLevel.WARN -> "WARN"
        resolved = _LEVELS.get(raw.lower()) if type(raw) is str else None
        if resolved is None:
            refusals.note("alert level", f"alert level {short_repr(level)} is not info, warn or "
                          "error; the alert is sent as 'info'", "alert", key="level")  # fmt: skip
            resolved = "info"
        title_text = _alert_text(title, "title", refusals)
        if not title_text:
            refusals.note("alert title", "an alert title must not be empty; sent as "
                          "'(untitled)'", "alert")  # fmt: skip
            title_text = "(untitled)"
        elif len(title_text) > MAX_ALERT_TITLE:
            refusals.note("alert title", f"an alert title has at most {MAX_ALERT_TITLE} "
                          "characters; it is cut", "alert")  # fmt: skip
            title_text = title_text[:MAX_ALERT_TITLE]
        body = {"title": title_text, "text": _alert_text(text, "text", refusals),
                "level": resolved}  # fmt: skip
        self._emit("alert_raised", body)

    def log_artifact(
        self,
        artifact_or_path: Any,
        name: str | None = None,
        type: str | None = None,
        aliases: Any = None,
        **_: Any,
    ) -> Any:
        """Record an artifact (a path, a URI or a :class:`runstream.Artifact`) as an
        ``artifact_logged`` event: digests, sizes, uri, manifest (docs/sdk.md "Artifacts").
        Files are read on the worker. ``aliases``: a list of names, or one ``str`` (one alias).
        Never raises: what cannot be read is refused (counted);
        wandb's other keywords (``tags=``) are accepted and not recorded."""
        if isinstance(aliases, str):  # one alias, not its characters (as tags)
            aliases = [aliases]
        return artifacts.log_artifact(self, artifact_or_path, name, type, aliases)

    def use_artifact(
        self, artifact_or_name: Any, type: str | None = None, aliases: Any = None, **_: Any
    ) -> Any:
        """Record an artifact the run reads (``use: true``): an Artifact, a path or a name
        such as ``"model:v3"``. Returns an :class:`runstream.Artifact`. Never raises."""
        if isinstance(aliases, str):  # one alias, not its characters (as tags)
            aliases = [aliases]
        return artifacts.log_artifact(self, artifact_or_name, None, type, aliases, use=True)

    def save(self, glob_str: Any, base_path: Any = None, policy: str = "live") -> bool:
        """wandb's ``run.save``: the files matching ``glob_str`` now, as a ``run_files``
        artifact (:func:`runstream.producers.artifacts.save`)."""
        return artifacts.save(self, glob_str, base_path, policy)

    def log_code(self, root: Any = ".", name: str | None = None, **fns: Any) -> Any:
        """The source files under ``root`` as a ``code`` artifact (``include_fn``,
        ``exclude_fn`` as in wandb: :func:`runstream.producers.artifacts.log_code`)."""
        return artifacts.log_code(self, root, name, **fns)

    def watch(  # noqa: PLR0917 - wandb's signature, positional as there
        self,
        model: Any,
        criterion: Any = None,
        log: str | None = "gradients",
        log_freq: int = 1000,
        idx: int | None = None,
        log_graph: bool = False,
    ) -> None:
        """Log a torch module's gradient and/or parameter histograms every ``log_freq``
        training steps (wandb's ``watch``: :mod:`runstream.producers.watch`). Never raises."""
        from runstream.producers.watch import watch

        watch(self, model, log=log, log_freq=log_freq, idx=idx)

    def unwatch(self, model: Any = None) -> None:
        """Stop :meth:`watch` for ``model`` (every watched model without one)."""
        from runstream.producers.watch import unwatch

        unwatch(self, model)

    # --- ending -------------------------------------------------------------------------------
    def finish(self, exit_code: int | None = None, status: str | None = None) -> FinishResult:
        """End the run and say what happened to its events (:class:`FinishResult`).

        Waits first for the SDK's worker to have spooled (or, with the disk unwritable, kept in
        memory) every event of the run: local work, at most ``max(finish_timeout, 60)`` seconds
        (else ``FinishResult.incomplete``); then at most what is left of
        ``settings.finish_timeout`` seconds for Kafka to acknowledge them. What is not delivered
        by then stays in the local spool, for ``runstream sync`` (or the next run of this
        process), and one line says exactly what happened. Never raises; calling it again
        returns the first result. ``exit_code``: the process's exit status (0-255); ``status``
        defaults to ``finished`` for 0, ``killed`` for 128+N, ``failed`` otherwise. Without
        ``exit_code``, called while an exception is in flight (in an ``except`` or a
        ``finally`` it passes through: ``sys.exc_info()``), the run ends as that exception
        ends the program (:func:`~runstream.producers.ending.exit_status`: ``failed``/1,
        ``killed``/130 for KeyboardInterrupt); else ``finished``/0.
        """
        if exit_code is None:
            exc_type, exc, _ = sys.exc_info()
            exit_code, derived = exit_status(exc_type, exc)
            if status is None:
                status = derived
        with self._finish_lock:
            if self._finished is not None:
                return self._finished
            if self._finishing:
                # Re-entered on this thread by a signal handler (SIGTERM while the program's own
                # finish() waits on the spool or Kafka): that call has ended the run already.
                # Waiting for it would wait forever (it cannot resume before we return): give
                # its events what finish_timeout allows, and report what stands.
                self._worker.flush(self.settings.finish_timeout, self._channel)
                return self._result()
            self._finishing = True
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
        active.unregister(self)
        report(self, result)
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
            refused=self.refused,
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
        else:  # config, summary, tags, define_metric after finish(): said, like log()
            self._log_after_finish(_CALL_OF.get(type_name, type_name))

    def _after_fork_in_child(self) -> None:
        self._forked = True
        self._warned_finished = False
        self._finished = FinishResult(0, 0, 0, 0, "run belongs to the parent process")
