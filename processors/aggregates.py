"""Run state and metric summaries, folded from a run's events: pure functions over plain dicts.

The dicts are what the faust tables hold and what the ``runs`` and ``summaries`` topics carry
(JSON, NaN and infinities as strings), so one module defines the meaning for the live path, a
replay, and the tests. Every entry remembers the highest ``seq`` folded into it and ignores
events at or below it: an event read twice (a worker restarted before its offsets were
committed, a producer's re-send) changes nothing, which is what keeps counts and means exact.
Seqs skipped on the way up are remembered as the run's ``gaps`` (normally none): an event that
fills one arrives late but is new. Its metric points are folded into the summaries (count, min,
max, mean and first/last step do not depend on order; ``last`` goes by (step, seq)); a late
event of another type does not change the run's state (it would undo a later one) and is
counted in the state's ``late_left_out`` instead (docs/processors.md).

The rules are those of ClickHouse's ``run_summaries`` (sinks/ddl/0004): NaN points are counted
but left out of min, max and mean; infinities take part; ties for min and max go to the earliest
step; ``last`` is the value at the highest (step, seq).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import reduce
from operator import add
from typing import Any

from runstream.processors.bounds import bound_config
from runstream.schemas.events import (
    NON_FINITE_TO_JSON,
    ConfigUpdated,
    Heartbeat,
    MetricDefined,
    RunFinished,
    RunResumed,
    RunStarted,
    RunUpdated,
    TagsUpdated,
    dump_metric_value,
)

RunState = dict[str, Any]
Summary = dict[str, Any]

ALIVE = "running"


def run_key(project: str, run_id: str) -> str:
    """Table and topic key of a run (a unit separator cannot occur in either part)."""
    return f"{project}\x1f{run_id}"


def summary_key(project: str, run_id: str, name: str) -> str:
    return f"{project}\x1f{run_id}\x1f{name}"


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_state(project: str, run_id: str) -> RunState:
    return {
        "project": project,
        "run_id": run_id,
        "name": None,
        "status": ALIVE,
        "started_at": None,
        "ended_at": None,
        "last_event_at": None,
        "last_heartbeat": None,
        "last_step": None,
        "last_step_at": None,
        "config": {},
        "tags": [],
        "group": None,
        "job_type": None,
        "exit_code": None,
        "metric_summaries": {},  # define_metric: pattern -> min | max | last | mean
        "last_seq": -1,
        "partition": None,
        "version": 0,
    }


NEW, LATE, SEEN = 0, 1, 2
"""What :func:`take_seq` says of an event's seq."""

MAX_GAPS = 1_000
"""Gaps remembered per run; past it the lowest are forgotten (``gaps_forgotten_below``)."""


def take_seq(state: RunState, seq: int) -> int:
    """Mark ``seq`` folded in the run's state. :data:`NEW`: above every seq so far (gaps below
    it are remembered); :data:`LATE`: it fills a gap (never folded before); :data:`SEEN`:
    folded before (a re-send or a re-read), or below the gaps a run with more than
    :data:`MAX_GAPS` had to forget (counted in ``late_left_out``: it cannot be told apart)."""
    last = state["last_seq"]
    if seq > last:
        if seq > last + 1:
            gaps = state.get("gaps") or []
            gaps.append([last + 1, seq - 1])
            if len(gaps) > MAX_GAPS:
                state["gaps_forgotten_below"] = gaps.pop(0)[1]
            state["gaps"] = gaps
        state["last_seq"] = seq
        return NEW
    gaps = state.get("gaps")
    if not gaps:
        return SEEN
    index = bisect_right(gaps, seq, key=_gap_low) - 1
    if index < 0 or gaps[index][1] < seq:
        if seq <= state.get("gaps_forgotten_below", -1):
            state["late_left_out"] = state.get("late_left_out", 0) + 1
        return SEEN
    low, high = gaps[index]
    parts = [part for part in ([low, seq - 1], [seq + 1, high]) if part[0] <= part[1]]
    gaps[index : index + 1] = parts
    if not gaps:
        del state["gaps"]
    return LATE


def _gap_low(gap: list[int]) -> int:
    return gap[0]


def fold_run(state: RunState, event: Any, partition: int | None = None) -> bool:
    """Fold one event into its run's state; False if it was already folded in. A late event
    (:func:`take_seq`) returns True: a ``metrics_logged`` one may raise ``last_step``, any other
    is counted in ``late_left_out`` and changes nothing else (its points, if any, are the
    caller's: :func:`fold_point` with ``late=True``)."""
    taken = take_seq(state, event.seq)
    if taken == SEEN:
        return False
    if taken == LATE:
        state["version"] += 1
        if event.type == "metrics_logged":
            step = event.body.step
            if state["last_step"] is None or step > state["last_step"]:
                state["last_step"] = step
                state["last_step_at"] = _iso(event.ts)
        else:
            state["late_left_out"] = state.get("late_left_out", 0) + 1
        return True
    state["version"] += 1
    if partition is not None:
        state["partition"] = partition
    at = _iso(event.ts)
    state["last_event_at"] = at
    body = event.body
    if state["status"] == "crashed" and event.type != "run_finished":
        state["status"] = ALIVE  # it was only silent: a later event revives it
        state["ended_at"] = None
    if event.type == "metrics_logged":  # also processors.decoding.PlainMetrics
        if state["last_step"] is None or body.step > state["last_step"]:
            state["last_step"] = body.step
            state["last_step_at"] = at
    elif isinstance(body, Heartbeat):
        state["last_heartbeat"] = at
        if body.step is not None and (state["last_step"] is None or body.step > state["last_step"]):
            state["last_step"] = body.step
            state["last_step_at"] = at
    elif isinstance(body, RunStarted):
        state.pop("left_out", None)  # a new config: what the old one lost no longer applies
        state.update(
            name=body.name,
            started_at=at,
            config=dict(body.config),
            tags=list(body.tags),
            group=body.group,
            job_type=body.job_type,
            status=ALIVE,
        )
        bound_config(state)
    elif isinstance(body, ConfigUpdated):
        # A merge patch of top-level keys, as runs_current reads it: null removes the key.
        merged = {**state["config"], **body.config}
        state["config"] = {key: value for key, value in merged.items() if value is not None}
        bound_config(state)
    elif isinstance(body, TagsUpdated):
        state["tags"] = list(body.tags)
    elif isinstance(body, MetricDefined):
        if body.summary is not None:  # absent: this definition does not choose a summary
            state["metric_summaries"] = {**state["metric_summaries"], body.name: body.summary}
    elif isinstance(body, RunUpdated):
        if body.name is not None:
            state["name"] = body.name
    elif isinstance(body, RunResumed):
        state.update(status=ALIVE, ended_at=None, exit_code=None)
    elif isinstance(body, RunFinished):
        state.update(status=body.status, ended_at=at, exit_code=body.exit_code)
    return True


def mark_crashed(state: RunState, at: datetime) -> bool:
    """The run went silent past its heartbeat timeout."""
    if state["status"] != ALIVE:
        return False
    state.update(status="crashed", ended_at=_iso(at))
    state["version"] += 1
    return True


def summary_choice(state: RunState | None, name: str) -> str:
    """Which value stands for ``name`` in the run's summary (``define_metric``; default last)."""
    return summary_chooser(state)(name) if state else "last"


def summary_chooser(state: RunState) -> Callable[[str], str]:
    """:func:`summary_choice` for many names of one run: the patterns are picked out once, not
    once per name (a run may define thousands of metrics and log as many)."""
    chosen: dict[str, str] = state["metric_summaries"]
    if not chosen:
        return _last
    patterns = [
        (pattern, str(summary)) for pattern, summary in chosen.items() if pattern[-1:] == "*"
    ]

    def choose(name: str) -> str:
        exact = chosen.get(name)
        if exact is not None:
            return str(exact)
        for pattern, summary in patterns:
            # A prefix, as the SDK and ClickHouse read it: 'w[0]*' is no glob.
            if name.startswith(pattern[:-1]):
                return summary
        return "last"

    return choose


def _last(name: str) -> str:
    return "last"


def new_summary(project: str, run_id: str, name: str) -> Summary:
    return {
        "project": project,
        "run_id": run_id,
        "name": name,
        "count": 0,
        "nan_count": 0,
        "first_step": None,
        "last_step": None,
        "last": None,
        "last_order": None,  # [step, seq] of `last`
        "min": None,
        "step_of_min": None,
        "max": None,
        "step_of_max": None,
        "sum": 0.0,
        "finite_count": 0,
        "mean": None,
        "summary": "last",
        "value": None,
        "last_seq": -1,
        "version": 0,
    }


def fold_point(summary: Summary, value: float, step: int, seq: int, late: bool = False) -> bool:
    """Fold one point (of the event with this ``seq``) into its metric's summary.

    ``late``: the run's state found the event late but new (:func:`take_seq`): folded although
    ``seq`` is below the summary's ``last_seq``, which stays."""
    if late:
        pass
    elif seq <= summary["last_seq"]:
        return False
    else:
        summary["last_seq"] = seq
    summary["version"] += 1
    summary["count"] += 1
    if summary["first_step"] is None or step < summary["first_step"]:
        summary["first_step"] = step
    if summary["last_step"] is None or step > summary["last_step"]:
        summary["last_step"] = step
    order = summary["last_order"]
    if order is None or (step, seq) > (order[0], order[1]):
        summary["last"] = value
        summary["last_order"] = [step, seq]
    if math.isnan(value):
        summary["nan_count"] += 1
        if summary["finite_count"] == 0:
            summary["mean"] = math.nan  # as avg() over no point in run_summaries (0004)
        return True
    low = summary["min"]
    if low is None or value < low or (value == low and step < summary["step_of_min"]):
        summary["min"], summary["step_of_min"] = value, step
    high = summary["max"]
    if high is None or value > high or (value == high and step < summary["step_of_max"]):
        summary["max"], summary["step_of_max"] = value, step
    summary["sum"] += value
    summary["finite_count"] += 1
    summary["mean"] = summary["sum"] / summary["finite_count"]
    return True


def fold_batch(
    state: RunState, summaries: dict[str, Summary], events: Iterable[Any], partition: int | None
) -> tuple[list[Any], set[str]]:
    """Fold a run's events, in partition order, into its state and the summaries of its metrics.

    The same result as :func:`fold_run` for every event and :func:`fold_point` for every point,
    at a fraction of the cost: the points of a metric are folded a column at a time (C loops
    for sum, min and max), and the run's timestamps are formatted once per batch. Returns the
    events folded in (duplicates left out) and the names of the metrics they touched.
    """
    folded: list[Any] = []
    late: list[Any] = []  # metrics events that fill a gap
    columns = _Columns()
    last_seen: Any = None  # the latest metrics event folded and not yet written into `state`
    step_event: Any = None  # the metrics event that raised `last_step`, likewise
    for event in events:
        if event.type != "metrics_logged":
            if last_seen is not None:  # fold_run reads what the metrics events left
                _settle_run(state, last_seen, step_event)
                last_seen = step_event = None
            if fold_run(state, event, partition):
                folded.append(event)
            continue
        seq = event.seq
        if seq <= state["last_seq"]:
            if state.get("gaps"):
                high_step = state["last_step"]
                if fold_run(state, event, partition):
                    late.append(event)  # fills a gap: new, only late
                    folded.append(event)
                    if state["last_step"] != high_step:
                        step_event = None  # fold_run set last_step_at from this one
            continue
        take_seq(state, seq)
        state["version"] += 1
        if state["status"] == "crashed":
            state["status"] = ALIVE  # it was only silent: a later event revives it
            state["ended_at"] = None
        step = event.body.step
        last_step = state["last_step"]
        if last_step is None or step > last_step:
            state["last_step"] = step
            step_event = event
        last_seen = event
        columns.add(event.body.metrics, step, seq)
        folded.append(event)
    if partition is not None and folded:
        state["partition"] = partition
    if last_seen is not None:
        _settle_run(state, last_seen, step_event)
    touched = set()
    for name, values, steps, seqs in columns.items():
        summary = summaries.get(name)
        if summary is None:
            summary = summaries[name] = new_summary(state["project"], state["run_id"], name)
        _fold_column(summary, values, steps, seqs)
        touched.add(name)
    for event in late:  # rare: point by point, order-free (``last`` goes by (step, seq))
        for name, value in event.body.metrics.items():
            summary = summaries.get(name)
            if summary is None:
                summary = summaries[name] = new_summary(state["project"], state["run_id"], name)
            fold_point(summary, value, event.body.step, event.seq, late=True)
            touched.add(name)
    return folded, touched


def _settle_run(state: RunState, last_seen: Any, step_event: Any) -> None:
    at = _iso(last_seen.ts)
    state["last_event_at"] = at
    if step_event is not None:
        state["last_step_at"] = at if step_event is last_seen else _iso(step_event.ts)


class _Columns:
    """The points of a batch, a column per metric: events logging the same names in the same
    order (nearly all of them) are transposed together, by C code."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, ...], tuple[list[Any], list[int], list[int]]] = {}
        self._last: tuple[tuple[str, ...], tuple[list[Any], list[int], list[int]]] | None = None

    def add(self, metrics: dict[str, float], step: int, seq: int) -> None:
        names = tuple(metrics)
        last = self._last
        if last is not None and last[0] == names:
            group = last[1]
        else:
            group = self._groups.setdefault(names, ([], [], []))
            self._last = (names, group)
        group[0].append(metrics.values())
        group[1].append(step)
        group[2].append(seq)

    def items(self) -> Iterable[tuple[str, Sequence[float], list[int], list[int]]]:
        """(name, values, steps, seqs) of each metric, its points in seq order."""
        by_name: dict[str, list[tuple[Sequence[float], list[int], list[int]]]] = {}
        for names, (rows, steps, seqs) in self._groups.items():
            for name, values in zip(names, zip(*rows, strict=True), strict=True):
                by_name.setdefault(name, []).append((values, steps, seqs))
        for name, parts in by_name.items():
            if len(parts) == 1:
                yield (name, *parts[0])
                continue
            points = sorted(
                (seq, step, value)
                for values, steps, seqs in parts
                for value, step, seq in zip(values, steps, seqs, strict=True)
            )
            yield (
                name,
                [value for _, _, value in points],
                [step for _, step, _ in points],
                [seq for seq, _, _ in points],
            )


def _fold_column(
    summary: Summary, values: Sequence[float], steps: list[int], seqs: list[int]
) -> None:
    """:func:`fold_point` for each point, in one go for the common case: finite values at
    steps that do not go down (``seqs`` increase)."""
    total = reduce(add, values, summary["sum"])  # in order, as point by point: the same float
    if (
        not math.isfinite(total)  # a NaN or an infinity among them (or before)
        or seqs[0] <= summary["last_seq"]
        or steps != sorted(steps)
    ):
        for value, step, seq in zip(values, steps, seqs, strict=True):
            fold_point(summary, value, step, seq)
        return
    n = len(values)
    summary["last_seq"] = seqs[-1]
    summary["version"] += n
    summary["count"] += n
    first, last = steps[0], steps[-1]
    if summary["first_step"] is None or first < summary["first_step"]:
        summary["first_step"] = first
    if summary["last_step"] is None or last > summary["last_step"]:
        summary["last_step"] = last
    order = summary["last_order"]
    if order is None or (last, seqs[-1]) > (order[0], order[1]):
        summary["last"] = values[-1]
        summary["last_order"] = [last, seqs[-1]]
    # Steps do not go down, so a value's first position is its earliest step (ties: earliest).
    low = min(values)
    at = steps[values.index(low)]
    if (
        summary["min"] is None
        or low < summary["min"]
        or (low == summary["min"] and at < summary["step_of_min"])
    ):
        summary["min"], summary["step_of_min"] = low, at
    high = max(values)
    at = steps[values.index(high)]
    if (
        summary["max"] is None
        or high > summary["max"]
        or (high == summary["max"] and at < summary["step_of_max"])
    ):
        summary["max"], summary["step_of_max"] = high, at
    summary["sum"] = total
    summary["finite_count"] += n
    summary["mean"] = total / summary["finite_count"]


def settle(summary: Summary, choice: str) -> Summary:
    """Set the summary's headline ``value`` by the run's ``define_metric`` choice."""
    summary["summary"] = choice
    summary["value"] = summary[choice] if choice in ("min", "max", "mean") else summary["last"]
    return summary


_FLOAT_FIELDS = ("last", "min", "max", "sum", "mean", "value")


def to_wire(record: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities as the schema's strings, so the record is valid JSON."""
    for name in _FLOAT_FIELDS:
        value = record.get(name)
        if type(value) is float and not math.isfinite(value):
            break
    else:
        return record  # the common case: nothing to change, nothing to copy
    return {key: _wire_value(value) for key, value in record.items()}


def _wire_value(value: Any) -> Any:
    return dump_metric_value(value) if isinstance(value, float) else value


def from_wire(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    for key in _FLOAT_FIELDS:
        value = out.get(key)
        if isinstance(value, str):
            out[key] = NON_FINITE_TO_JSON[value]
    return out
