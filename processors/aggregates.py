"""Run state and metric summaries, folded from a run's events: pure functions over plain dicts.

The dicts are what the faust tables hold and what the ``runs`` and ``summaries`` topics carry
(JSON, NaN and infinities as strings), so one module defines the meaning for the live path, a
replay, and the tests. Every entry remembers the highest ``seq`` folded into it and ignores
events at or below it: an event read twice (a worker restarted before its offsets were
committed, a producer's re-send) changes nothing, which is what keeps counts and means exact.

The rules are those of ClickHouse's ``run_summaries`` (sinks/ddl/0004): NaN points are counted
but left out of min, max and mean; infinities take part; ties for min and max go to the earliest
step; ``last`` is the value at the highest (step, seq).
"""

from __future__ import annotations

import fnmatch
import math
from datetime import datetime
from typing import Any

from runstream.schemas.events import (
    ConfigUpdated,
    Heartbeat,
    MetricDefined,
    RunFinished,
    RunResumed,
    RunStarted,
    TagsUpdated,
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


def fold_run(state: RunState, event: Any, partition: int | None = None) -> bool:
    """Fold one event into its run's state; False if it was already folded in (or older)."""
    if event.seq <= state["last_seq"]:
        return False
    state["last_seq"] = event.seq
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
        state.update(
            name=body.name,
            started_at=at,
            config=dict(body.config),
            tags=list(body.tags),
            group=body.group,
            job_type=body.job_type,
            status=ALIVE,
        )
    elif isinstance(body, ConfigUpdated):
        state["config"] = {**state["config"], **body.config}
    elif isinstance(body, TagsUpdated):
        state["tags"] = list(body.tags)
    elif isinstance(body, MetricDefined):
        state["metric_summaries"] = {**state["metric_summaries"], body.name: body.summary}
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
    if state:
        chosen = state["metric_summaries"]
        if name in chosen:
            return str(chosen[name])
        for pattern, summary in chosen.items():
            if pattern.endswith("*") and fnmatch.fnmatchcase(name, pattern):
                return str(summary)
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


def fold_point(summary: Summary, value: float, step: int, seq: int) -> bool:
    """Fold one point (of the event with this ``seq``) into its metric's summary."""
    if seq <= summary["last_seq"]:
        return False
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
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def from_wire(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    for key in _FLOAT_FIELDS:
        value = out.get(key)
        if isinstance(value, str):
            out[key] = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return out
