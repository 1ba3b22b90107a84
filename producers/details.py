"""What a run says about itself beyond its metrics: :class:`RunDetails`, the part of
:class:`~runstream.producers.run.Run` that holds its name and notes (assignable, recorded as
``run_updated`` events), ``define_metric``, and the attributes wandb code reads on a run
(``url``, ``dir``, ``entity``, ``path``, ``start_time``, ``resumed``, ``offline``,
``disabled``, ``_label``, ``get_url``, ``get_project_url``; wandb 0.31's ``Run`` reference).

Kept apart from ``run.py`` so that the hot path (``log``) stays short to read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runstream.producers.inputs import is_name, safe_str, short_repr, text_or_none
from runstream.producers.metric_defs import (
    StepMetrics,
    ignored,
    resolve_goal,
    resolve_summary,
    warn_once,
)
from runstream.producers.values import MAX_NAME_LENGTH

if TYPE_CHECKING:
    from runstream.producers.ending import FinishResult
    from runstream.producers.mappings import RunSummary, SummaryKind
    from runstream.producers.values import Refusals
    from runstream.settings import Settings

logger = logging.getLogger("runstream")

URL_SCHEME = "runstream"
"""``run.url`` is ``runstream://<project>/<run id>`` until runstream has a UI: a stable locator
of the run, not a web address (docs/wandb.md)."""


class RunDetails:
    """Name, notes, metric definitions and the run attributes wandb code reads."""

    # Set by Run.__init__ (and DisabledRun's); declared here for the type checker.
    id: str
    project: str
    mode: str
    settings: Settings
    summary: RunSummary
    _refusals: Refusals
    _finished: FinishResult | None
    _summary_kinds: dict[str, SummaryKind]
    _name: str
    _notes: str | None
    # Defaults for runs that do not set them (a disabled run).
    _step_metrics: StepMetrics | None = None
    _start_time: float = 0.0
    _resumed: bool = False
    _labels: dict[str, str] | None = None

    def _emit(self, type_name: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- name and notes ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The run's display name (its id when it was given none). Assigning it records a
        ``run_updated`` event: ``runs_current.name`` shows the latest (docs/sql.md)."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        text = text_or_none(value, "name", self._refusals)
        if not text:  # refused like every input the run cannot keep: warned once, counted
            self._refusals.note("run.name", f"run.name = {short_repr(value)} ignored: a name is "
                                "non-empty text", "name", key="empty name")  # fmt: skip
            return
        self._name = text
        self._emit("run_updated", {"name": text})

    @property
    def notes(self) -> str | None:
        """The run's notes (a description). Assigning them records a ``run_updated`` event."""
        return self._notes

    @notes.setter
    def notes(self, value: str | None) -> None:
        text = text_or_none(value, "notes", self._refusals) or ""
        self._notes = text
        self._emit("run_updated", {"notes": text})

    # --- define_metric ------------------------------------------------------------------------
    def define_metric(
        self,
        name: str,
        summary: str | None = None,
        *,
        step_metric: str | None = None,
        step_sync: bool | None = None,
        goal: str | None = None,
        hidden: bool | None = None,
        overwrite: bool | None = None,
    ) -> None:
        """Define how ``name`` (a metric, or every name starting with ``prefix`` for
        ``prefix*``) is summarised and plotted, as wandb 0.31's ``define_metric``.

        ``summary``: ``min``, ``max``, ``mean``, ``last``, ``best`` (with ``goal``), ``copy``
        (= ``last``), ``none``, or a comma-separated list of them; runstream keeps one kind per
        metric, the first it can honour, and warns once about the rest (without ``summary``
        the kind is left as it was). ``goal``: ``minimize`` / ``maximize``. ``step_metric``:
        the metric ``name`` is plotted against; a ``log()`` without ``step=`` whose data holds
        it takes its value as the step, and with ``step_sync`` (default True when
        ``step_metric`` is given) a call without it takes its last value
        (``producers/metric_defs.py``). ``hidden``: recorded. ``overwrite``: accepted,
        ignored (a later definition of a name always wins). Recorded as a ``metric_defined``
        event. Never raises: a bad name is refused and counted; a ``summary``, ``goal`` or
        ``step_metric`` not kept as given is warned about once and counted
        (``refused_by_kind["argument"]``).
        """
        if not is_name(name):
            self._refusals.refuse(
                safe_str(name)[:60],
                f"define_metric() needs a name of 1 to {MAX_NAME_LENGTH} characters of text",
                "name",
            )
            return
        resolved_goal = resolve_goal(goal, self._refusals)
        kind = resolve_summary(summary, resolved_goal, self._refusals)
        body: dict[str, Any] = {"name": name}
        if kind is not None:
            body["summary"] = kind
        if step_metric is not None:
            if is_name(step_metric):
                sync = True if step_sync is None else bool(step_sync)
                body["step_metric"] = step_metric
                body["step_sync"] = sync
                if self._step_metrics is None:
                    self._step_metrics = StepMetrics()
                self._step_metrics.define(name, step_metric, sync)
            else:
                ignored(self._refusals, "step_metric", "define_metric(step_metric=%r) "
                        "ignored: a step metric is a metric name", step_metric)  # fmt: skip
        if resolved_goal is not None:
            body["goal"] = resolved_goal
        if hidden is not None:
            body["hidden"] = bool(hidden)
        if kind is not None:
            self._summary_kinds[name] = kind
            self.summary._kind_of.clear()  # names are matched against the patterns again
        self._emit("metric_defined", body)

    # --- attributes wandb code reads -----------------------------------------------------------
    @property
    def url(self) -> str:
        """``runstream://<project>/<run id>``: a stable locator until runstream has a UI."""
        return f"{URL_SCHEME}://{self.project}/{self.id}"

    def get_url(self) -> str:
        return self.url

    @property
    def project_url(self) -> str:
        return f"{URL_SCHEME}://{self.project}"

    def get_project_url(self) -> str:
        return self.project_url

    @property
    def entity(self) -> str:
        """runstream has no entities (users or teams): always ``""``."""
        return ""

    @property
    def path(self) -> str:
        """``<project>/<run id>`` (wandb's is ``entity/project/run_id``; runstream has no
        entity)."""
        return f"{self.project}/{self.id}"

    @property
    def dir(self) -> str:
        """A directory for the run's files, ``<settings.dir>/files/<run id>`` (created on first
        read); wandb code writes files it means to save there."""
        path = Path(self.settings.dir) / "files" / self.id
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            warn_once("run dir", "runstream: cannot create the run's directory %s: %s", path, exc)
        return str(path)

    @property
    def start_time(self) -> float:
        """When this session of the run started, seconds since the epoch."""
        return self._start_time

    @property
    def resumed(self) -> bool:
        """Whether this session continues a run that existed (``resume=``)."""
        return self._resumed

    @property
    def offline(self) -> bool:
        return self.mode == "offline"

    @property
    def disabled(self) -> bool:
        return self.mode == "disabled"

    def _label(self, *_: Any, **labels: Any) -> None:
        """wandb's private ``run._label(code=..., repo=...)``, which integrations call to say
        who started the run: kept on the run (:attr:`labels`), not sent."""
        if self._labels is None:
            self._labels = {}
        self._labels.update({str(k): safe_str(v) for k, v in labels.items()})

    @property
    def labels(self) -> dict[str, str]:
        """What integrations said about themselves with ``_label``."""
        return dict(self._labels or {})
