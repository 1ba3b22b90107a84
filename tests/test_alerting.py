"""Alert rules (processors/rules.py) and their evaluation (processors/alerting.py).

No services: events are built as dicts, encoded and decoded like the processors receive them.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from runstream.errors import RunstreamError
from runstream.processors.alert import Alert, alert_id
from runstream.processors.alerting import AlertEvaluator, AlertStateError
from runstream.processors.rules import (
    DivergenceRule,
    NanRule,
    PlateauRule,
    Rule,
    RuleError,
    RuleSet,
    RunFailedRule,
    StalledRule,
    ThresholdRule,
    UserRule,
    dump_rules,
    load_rules,
    loads_rules,
    parse_rule,
)
from runstream.schemas import AnyEvent, decode, encode, event_dict, json_safe_metrics
from tests.samples import PRODUCER, sample_event

T0 = datetime(2026, 11, 28, 19, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Run:
    """Builds the events of one run with consecutive seqs and a clock one second per event."""

    def __init__(self, run_id: str = "r1", project: str = "vision") -> None:
        self.run_id = run_id
        self.project = project
        self.seq = -1
        self.clock = 0.0

    def event(self, type_name: str, body: Mapping[str, Any], *, dt: float = 1.0) -> AnyEvent:
        self.seq += 1
        self.clock += dt
        raw = event_dict(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.project}/{self.run_id}/{self.seq}")),
            type=type_name,
            project=self.project,
            run_id=self.run_id,
            seq=self.seq,
            ts=at(self.clock).isoformat().replace("+00:00", "Z"),
            producer=PRODUCER,
            body=dict(body),
        )
        return decode(encode(raw))

    def start(self, tags: Iterable[str] = (), group: str | None = None) -> AnyEvent:
        return self.event("run_started", {"tags": list(tags), "group": group})

    def log(self, step: int, dt: float = 1.0, **metrics: float) -> AnyEvent:
        return self.metrics(step, metrics, dt=dt)

    def metrics(self, step: int, metrics: Mapping[str, float], dt: float = 1.0) -> AnyEvent:
        return self.event(
            "metrics_logged", {"step": step, "metrics": json_safe_metrics(metrics)}, dt=dt
        )

    def heartbeat(self, step: int | None, dt: float = 1.0) -> AnyEvent:
        return self.event("heartbeat", {"step": step}, dt=dt)

    def finish(self, status: str = "finished", exit_code: int = 0) -> AnyEvent:
        return self.event("run_finished", {"status": status, "exit_code": exit_code})


def feed(evaluator: AlertEvaluator, events: Iterable[AnyEvent]) -> list[Alert]:
    out: list[Alert] = []
    for event in events:
        out.extend(evaluator.observe(event))
    return out


def dumps(alerts: Iterable[Alert]) -> list[str]:
    """Alerts as their wire JSON: comparable even when a value is NaN."""
    return [alert.to_json().decode() for alert in alerts]


def fired(alerts: Iterable[Alert]) -> list[Alert]:
    return [a for a in alerts if a.resolved_at is None]


def resolved(alerts: Iterable[Alert]) -> list[Alert]:
    return [a for a in alerts if a.resolved_at is not None]


# --- threshold --------------------------------------------------------------------------------
def test_threshold_fires_once_per_episode_resolves_and_fires_again() -> None:
    ev = AlertEvaluator([ThresholdRule(name="loss-high", metric="loss", above=10)])
    run = Run()
    assert ev.observe(run.start()) == []
    assert ev.observe(run.log(10, loss=5.0)) == []

    first = ev.observe(run.log(40, loss=12.5))
    assert len(first) == 1
    alert = first[0]
    assert alert.title == "loss above 10 (12.5 at step 40)"
    assert alert.alert_id == alert_id("loss-high", "vision", "r1", "loss", 1)
    assert (alert.rule, alert.metric, alert.value, alert.step) == ("loss-high", "loss", 12.5, 40)
    assert alert.level == "warn" and alert.resolved_at is None
    assert alert.fired_at == alert.updated_at == at(run.clock)  # the event's ts, not now
    assert alert.source_seq == run.seq

    assert ev.observe(run.log(50, loss=20.0)) == []  # still open: no second alert
    assert ev.observe(run.log(60, loss=30.0)) == []

    back = ev.observe(run.log(70, loss=3.0))
    assert len(back) == 1
    res = back[0]
    assert res.alert_id == alert.alert_id
    assert res.resolved_at == res.updated_at == at(run.clock)
    assert res.fired_at == alert.fired_at and res.value == 12.5  # the firing's facts stay
    assert "back to 3 at step 70" in res.text
    assert ev.observe(run.log(80, loss=4.0)) == []  # nothing open, nothing to resolve

    again = ev.observe(run.log(90, loss=11.0))
    assert len(again) == 1
    assert again[0].alert_id == alert_id("loss-high", "vision", "r1", "loss", 2)
    assert again[0].alert_id != alert.alert_id


def test_threshold_for_steps_needs_consecutive_steps() -> None:
    ev = AlertEvaluator([ThresholdRule(name="t", metric="loss", above=1, for_steps=3)])
    run = Run()
    assert feed(ev, [run.log(1, loss=2), run.log(2, loss=2), run.log(3, loss=0.5)]) == []
    assert feed(ev, [run.log(4, loss=2), run.log(5, loss=2)]) == []
    out = ev.observe(run.log(6, loss=2.5))
    assert [a.title for a in out] == ["loss above 1 for 3 steps (2.5 at step 6)"]


def test_threshold_below_band_and_nan_skipped() -> None:
    ev = AlertEvaluator(
        [
            ThresholdRule(name="low", metric="acc", below=0.5),
            ThresholdRule(name="band", metric="lr", below=0.0, above=1.0, level="error"),
        ]
    )
    run = Run()
    out = ev.observe(run.log(1, acc=0.4, lr=2.0))
    assert sorted(a.title for a in out) == [
        "acc below 0.5 (0.4 at step 1)",
        "lr above 1 (2 at step 1)",
    ]
    assert {a.rule: a.level for a in out} == {"low": "warn", "band": "error"}
    # NaN says nothing about a bound: it neither resolves nor counts.
    assert ev.observe(run.log(2, acc=math.nan, lr=math.nan)) == []
    out = ev.observe(run.log(3, acc=0.9, lr=-1.0))
    assert [a.rule for a in resolved(out)] == ["low"]  # lr is out of the band below now
    assert fired(out) == []


def test_metric_glob_tracks_each_metric_separately() -> None:
    ev = AlertEvaluator([ThresholdRule(name="val", metric="val/*", above=1)])
    run = Run()
    out = ev.observe(run.log(1, **{"val/loss": 2.0, "val/acc": 0.5, "train/loss": 9.0}))
    assert [(a.metric, a.alert_id) for a in out] == [
        ("val/loss", alert_id("val", "vision", "r1", "val/loss", 1))
    ]
    out = ev.observe(run.log(2, **{"val/loss": 2.0, "val/acc": 3.0}))
    assert [a.metric for a in out] == ["val/acc"]  # val/loss still open: not again


# --- nan ------------------------------------------------------------------------------------
def test_nan_rule_fires_on_nan_and_inf_not_on_finite() -> None:
    ev = AlertEvaluator([NanRule(name="nan")])
    run = Run()
    assert ev.observe(run.log(1, loss=0.5, acc=1e308, tiny=-0.0)) == []

    out = ev.observe(run.log(2, loss=math.nan, grad=math.inf, low=-math.inf, acc=0.1))
    assert sorted(a.title for a in out) == [
        "grad is inf at step 2",
        "loss is NaN at step 2",
        "low is -inf at step 2",
    ]
    assert all(a.level == "warn" for a in out)
    nan_alert = next(a for a in out if a.metric == "loss")
    assert math.isnan(nan_alert.value or 0.0)
    assert '"value":"NaN"' in nan_alert.to_json().decode()  # NaN travels as a string

    assert ev.observe(run.log(3, loss=math.inf, grad=math.inf)) == []  # still open
    out = ev.observe(run.log(4, loss=0.4))
    assert [(a.metric, a.resolved_at) for a in out] == [("loss", at(run.clock))]
    out = ev.observe(run.log(5, loss=math.nan))
    assert [a.alert_id for a in out] == [alert_id("nan", "vision", "r1", "loss", 2)]


def test_nan_rule_with_an_exact_metric() -> None:
    ev = AlertEvaluator([NanRule(name="nan-loss", metric="loss")])
    run = Run()
    assert ev.observe(run.log(1, acc=math.nan)) == []
    assert len(ev.observe(run.log(2, loss=math.inf))) == 1


# --- plateau --------------------------------------------------------------------------------
def test_plateau_min_fires_after_patience_and_resolves_on_improvement() -> None:
    ev = AlertEvaluator([PlateauRule(name="plateau", metric="val/loss", patience=3)])
    run = Run()
    values = [1.0, 0.8, 0.8, 0.9, 0.85]  # best 0.8 at step 2, then 3 steps without improvement
    out = feed(ev, [run.log(step, **{"val/loss": v}) for step, v in enumerate(values, 1)])
    assert [a.title for a in out] == [
        "val/loss has not improved for 3 steps (best 0.8 at step 2; 0.85 at step 5)"
    ]
    assert feed(ev, [run.log(6, **{"val/loss": 0.81}), run.log(7, **{"val/loss": 0.8})]) == []
    out = ev.observe(run.log(8, **{"val/loss": 0.7}))
    assert len(resolved(out)) == 1 and "improved to 0.7" in out[0].text
    out = feed(ev, [run.log(s, **{"val/loss": 0.75}) for s in (9, 10, 11)])
    assert [a.alert_id for a in out] == [alert_id("plateau", "vision", "r1", "val/loss", 2)]


def test_plateau_max_mode_and_min_delta() -> None:
    rule = PlateauRule(name="acc", metric="acc", mode="max", patience=2, min_delta=0.05)
    ev = AlertEvaluator([rule])
    run = Run()
    # 0.52 and 0.54 do not beat 0.5 by more than 0.05: two steps without improvement.
    out = feed(ev, [run.log(1, acc=0.5), run.log(2, acc=0.52), run.log(3, acc=0.54)])
    assert len(fired(out)) == 1
    assert resolved(ev.observe(run.log(4, acc=0.6)))
    assert ev.observe(run.log(5, acc=math.nan)) == []  # not progress, not a step of patience


# --- divergence -----------------------------------------------------------------------------
def test_divergence_fires_over_the_window_minimum_and_resolves() -> None:
    ev = AlertEvaluator([DivergenceRule(name="div", metric="loss", rise_pct=50, window=3)])
    run = Run()
    assert feed(ev, [run.log(1, loss=2.0), run.log(2, loss=1.0), run.log(3, loss=1.4)]) == []
    out = ev.observe(run.log(4, loss=1.6))  # min of the last 3 is 1.0: +60%
    assert [a.title for a in out] == [
        "loss diverging: 1.6 at step 4 is 60% above the minimum 1 of the last 3 steps"
    ]
    assert ev.observe(run.log(5, loss=1.8)) == []  # open: no second alert
    # window now (1.4, 1.6, 1.8): min 1.4, 2.0 is +43%: back within the margin.
    out = ev.observe(run.log(6, loss=2.0))
    assert len(resolved(out)) == 1
    assert feed(ev, [run.log(7, loss=2.1), run.log(8, loss=2.2)]) == []
    out = ev.observe(run.log(9, loss=4.0))
    assert [a.alert_id for a in out] == [alert_id("div", "vision", "r1", "loss", 2)]


@pytest.mark.parametrize(("window", "fires"), [(2, False), (3, True)])
def test_divergence_window_drops_old_minimums(window: int, fires: bool) -> None:
    rule = DivergenceRule(name="div", metric="loss", rise_pct=100, window=window)
    ev = AlertEvaluator([rule])
    run = Run()
    # 1.05 is more than twice 0.5, which only a window of 3 steps still holds.
    out = feed(ev, [run.log(s, loss=v) for s, v in enumerate([0.5, 0.9, 0.95, 1.05], 1)])
    assert len(out) == fires


# --- run_failed -----------------------------------------------------------------------------
def test_run_failed_fires_on_bad_status_resolves_on_resume_and_fires_again() -> None:
    ev = AlertEvaluator([RunFailedRule(name="failed", level="error")])
    run = Run()
    ev.observe(run.start())
    out = ev.observe(run.finish("failed", exit_code=3))
    assert [(a.title, a.level, a.metric) for a in out] == [
        ("run failed (exit code 3)", "error", "")
    ]
    first = out[0]
    assert first.alert_id == alert_id("failed", "vision", "r1", "", 1)
    out = ev.observe(run.event("run_resumed", {"step": 5}))
    assert [a.alert_id for a in resolved(out)] == [first.alert_id]
    out = ev.observe(run.finish("killed", exit_code=-9))
    assert [a.alert_id for a in out] == [alert_id("failed", "vision", "r1", "", 2)]


def test_run_failed_ignores_a_clean_finish_and_unlisted_statuses() -> None:
    ev = AlertEvaluator([RunFailedRule(name="failed", statuses=("failed",))])
    run = Run()
    assert ev.observe(run.finish("finished")) == []
    assert ev.run_crashed("vision", "r1", at(100)) == []  # finished runs do not crash
    other = Run("r2")
    ev.observe(other.start())
    assert ev.run_crashed("vision", "r2", at(100)) == []  # "crashed" is not in statuses
    assert ev.observe(other.finish("killed")) == []


def test_run_crashed_dedupes_and_revival_resolves() -> None:
    ev = AlertEvaluator([RunFailedRule(name="failed")])
    run = Run()
    ev.observe(run.start())
    ev.observe(run.heartbeat(3))
    out = ev.run_crashed("vision", "r1", at(100))
    assert len(out) == 1
    crash = out[0]
    assert crash.title.startswith("run crashed: no heartbeat since 2026-11-28 19:00:02")
    assert (crash.fired_at, crash.step, crash.source_seq) == (at(100), 3, None)
    assert ev.run_crashed("vision", "r1", at(130)) == []  # already declared
    out = ev.run_revived("vision", "r1", at(150))
    assert [(a.alert_id, a.resolved_at) for a in out] == [(crash.alert_id, at(150))]
    assert ev.run_revived("vision", "r1", at(160)) == []

    # Crashes again; this time an event newer than the crash shows it is alive.
    out = ev.run_crashed("vision", "r1", at(200))
    assert [a.alert_id for a in out] == [alert_id("failed", "vision", "r1", "", 2)]
    run.clock = 300
    out = ev.observe(run.heartbeat(3))
    assert [a.resolved_at for a in out] == [at(301)]


def test_crash_episode_stays_open_when_the_run_then_reports_failure() -> None:
    ev = AlertEvaluator([RunFailedRule(name="failed")])
    run = Run()
    ev.observe(run.start())
    assert len(ev.run_crashed("vision", "r1", at(5))) == 1
    # A late run_finished(failed) older than the declaration: same episode, no second alert.
    assert ev.observe(run.finish("failed", 1)) == []


# --- stalled ----------------------------------------------------------------------------------
def test_stalled_fires_on_heartbeats_resolves_on_new_step_and_fires_again() -> None:
    ev = AlertEvaluator([StalledRule(name="stalled", after_seconds=60)])
    run = Run()
    ev.observe(run.start())
    ev.observe(run.log(10, loss=1.0))  # step 10 at t=2
    assert ev.observe(run.heartbeat(10, dt=30)) == []  # t=32
    out = ev.observe(run.heartbeat(10, dt=30))  # t=62: 60 s without a new step
    assert [a.title for a in out] == ["no new step for 60 s (last step 10)"]
    assert (out[0].fired_at, out[0].value, out[0].step) == (at(62), 60.0, 10)
    assert ev.observe(run.heartbeat(10, dt=30)) == []  # open
    out = ev.observe(run.log(11, loss=1.0))
    assert len(resolved(out)) == 1 and "new step 11" in out[0].text
    out = feed(ev, [run.heartbeat(11, dt=40), run.heartbeat(11, dt=40)])
    assert [a.alert_id for a in out] == [alert_id("stalled", "vision", "r1", "", 2)]


def test_stalled_by_tick_only_for_runs_heard_from_recently() -> None:
    ev = AlertEvaluator([StalledRule(name="stalled", after_seconds=60)])
    live, silent = Run("live"), Run("silent")
    feed(ev, [live.start(), live.log(1, loss=1.0), silent.start(), silent.log(1, loss=1.0)])
    feed(ev, [live.heartbeat(1, dt=50)])  # live t=52; silent last heard at t=2
    assert ev.tick(at(30)) == []
    out = ev.tick(at(70))
    assert [(a.run_id, a.fired_at, a.source_seq) for a in out] == [("live", at(70), None)]
    assert ev.tick(at(80)) == []  # open
    # A finished run is not stalled; its open stall resolves.
    live.clock = 90
    out = ev.observe(live.finish())
    assert len(resolved(out)) == 1
    assert ev.tick(at(500)) == []


def test_stalled_resolves_when_the_run_crashes() -> None:
    ev = AlertEvaluator([StalledRule(name="stalled", after_seconds=10)])
    run = Run()
    feed(ev, [run.start(), run.heartbeat(None, dt=5)])  # t=1, t=6
    assert len(ev.tick(at(12))) == 1  # no step at all in 11 s, heard from 6 s ago
    out = ev.run_crashed("vision", "r1", at(100))
    assert len(resolved(out)) == 1
    assert ev.tick(at(200)) == []


# --- user -------------------------------------------------------------------------------------
def test_user_alerts_one_per_event_like_the_sink_view() -> None:
    ev = AlertEvaluator([UserRule(name="user"), UserRule(name="user-vision", project="vision")])
    run = Run()
    event = run.event("alert_raised", {"title": "Loss spiked", "text": "at 7", "level": "error"})
    out = ev.observe(event)
    assert len(out) == 1  # two user rules match, still one alert per event
    alert = out[0]
    assert (alert.alert_id, alert.rule, alert.level, alert.title, alert.text) == (
        event.id,
        "user",
        "error",
        "Loss spiked",
        "at 7",
    )
    assert alert.fired_at == alert.updated_at == event.ts and alert.source_seq == event.seq
    second = ev.observe(run.event("alert_raised", {"title": "Again"}))
    assert len(second) == 1 and second[0].alert_id != alert.alert_id  # no dedup, no resolve
    assert ev.observe(event) == []  # the same event re-sent


def test_user_alerts_need_a_user_rule() -> None:
    ev = AlertEvaluator([NanRule(name="nan")])
    assert ev.observe(decode(encode(sample_event("alert_raised")))) == []


# --- filters ----------------------------------------------------------------------------------
def test_project_tags_and_group_filters() -> None:
    rules: list[Rule] = [
        ThresholdRule(name="any", metric="loss", above=1),
        ThresholdRule(name="proj", metric="loss", above=1, project="nlp"),
        ThresholdRule(name="tagged", metric="loss", above=1, tags=("prod", "gpu")),
        ThresholdRule(name="grouped", metric="loss", above=1, group="sweep-1"),
        ThresholdRule(name="off", metric="loss", above=1, enabled=False),
    ]
    ev = AlertEvaluator(rules)

    def rules_firing(run: Run, tags: tuple[str, ...], group: str | None) -> set[str]:
        ev.observe(run.start(tags, group))
        return {a.rule for a in ev.observe(run.log(1, loss=5.0))}

    assert rules_firing(Run("a"), (), None) == {"any"}
    assert rules_firing(Run("b", project="nlp"), (), None) == {"any", "proj"}
    assert rules_firing(Run("c"), ("prod",), None) == {"any"}  # needs every tag
    assert rules_firing(Run("d"), ("gpu", "prod", "x"), "sweep-1") == {
        "any",
        "tagged",
        "grouped",
    }


def test_tags_updated_changes_the_rules_and_resolves_what_no_longer_applies() -> None:
    ev = AlertEvaluator([NanRule(name="prod-nan", tags=("prod",))])
    run = Run()
    ev.observe(run.start())
    assert ev.observe(run.log(1, loss=math.nan)) == []
    ev.observe(run.event("tags_updated", {"tags": ["prod"]}))
    out = ev.observe(run.log(2, loss=math.nan))
    assert len(out) == 1
    out = ev.observe(run.event("tags_updated", {"tags": []}))
    assert len(resolved(out)) == 1 and "no longer applies" in out[0].text
    ev.observe(run.event("tags_updated", {"tags": ["prod"]}))
    out = ev.observe(run.log(3, loss=math.nan))
    assert [a.alert_id for a in out] == [alert_id("prod-nan", "vision", "r1", "loss", 2)]


# --- order, duplicates, determinism -----------------------------------------------------------
ALL_RULES: list[Rule] = [
    ThresholdRule(name="loss-high", metric="loss", above=2.0, for_steps=2),
    NanRule(name="nan"),
    PlateauRule(name="plateau", metric="val/loss", patience=3),
    DivergenceRule(name="div", metric="loss", rise_pct=30, window=4),
    RunFailedRule(name="failed"),
    StalledRule(name="stalled", after_seconds=25),
    UserRule(name="user"),
]


def mixed_stream() -> list[AnyEvent]:
    """Two interleaved runs that make every kind fire and resolve, some more than once."""
    a, b = Run("a"), Run("b")
    events: list[AnyEvent] = [a.start(("prod",)), b.start()]
    losses = [1.0, 0.8, 2.5, 3.0, 1.0, math.nan, 0.9, 3.5, 4.0, 0.7, math.inf, 0.6]
    for i, loss in enumerate(losses):
        val = 1.0 if i % 4 else 0.5 + i / 100
        events.append(a.log(i, loss=loss, **{"val/loss": val}))
        events.append(b.log(i, loss=loss * 1.1, acc=0.5))
        if i % 3 == 0:
            events.append(a.heartbeat(i))
    events += [a.heartbeat(11, dt=30), a.heartbeat(11, dt=30), a.log(12, loss=0.5)]
    events.append(b.event("alert_raised", {"title": "look", "level": "warn"}))
    events += [b.finish("failed", 1), b.event("run_resumed", {"step": 12}), b.finish("crashed")]
    events += [a.finish()]
    return events


def test_duplicates_and_old_seqs_are_ignored() -> None:
    ev = AlertEvaluator(ALL_RULES)
    events = mixed_stream()
    once = feed(ev, events)
    state = json.dumps(ev.state(), sort_keys=True)
    assert feed(ev, events) == []  # the whole stream re-sent
    assert feed(ev, reversed(events)) == []
    assert json.dumps(ev.state(), sort_keys=True) == state  # and nothing changed
    assert len(once) > 10


def test_duplicates_within_the_stream_change_nothing() -> None:
    events = mixed_stream()
    with_dups = [e for event in events for e in (event, event)]
    assert dumps(feed(AlertEvaluator(ALL_RULES), with_dups)) == dumps(
        feed(AlertEvaluator(ALL_RULES), events)
    )


def test_mixed_stream_fires_every_kind() -> None:
    out = feed(AlertEvaluator(ALL_RULES), mixed_stream())
    assert {a.rule for a in fired(out)} == {
        "loss-high",
        "nan",
        "plateau",
        "div",
        "failed",
        "stalled",
        "user",
    }
    assert {a.rule for a in resolved(out)} >= {"loss-high", "nan", "div", "failed", "stalled"}
    ids = [a.alert_id for a in fired(out)]
    assert len(ids) == len(set(ids))  # every firing is its own episode
    for res in resolved(out):  # every resolution belongs to an earlier firing
        assert res.alert_id in ids


def test_replay_from_scratch_is_identical() -> None:
    events = mixed_stream()
    first = dumps(feed(AlertEvaluator(ALL_RULES), events))
    second = dumps(feed(AlertEvaluator(ALL_RULES), events))
    assert first == second


@pytest.mark.parametrize("cut", [1, 5, 17, 30, 37])
def test_state_round_trip_mid_stream_gives_the_uninterrupted_result(cut: int) -> None:
    events = mixed_stream()
    assert cut < len(events)
    whole = dumps(feed(AlertEvaluator(ALL_RULES), events))

    ev = AlertEvaluator(ALL_RULES)
    before = feed(ev, events[:cut])
    # Through strict JSON (no NaN), as a faust table or a file would store it.
    saved = json.loads(json.dumps(ev.state(), allow_nan=False))
    restored = AlertEvaluator.from_state(ALL_RULES, saved)
    after = feed(restored, events[cut:])
    assert dumps(before + after) == whole


def test_per_run_state_in_a_table_keyed_by_run() -> None:
    """The faust pattern: state_of() into a table after events, a loader reads it back."""
    events = mixed_stream()
    whole = dumps(feed(AlertEvaluator(ALL_RULES), events))
    table: dict[str, str] = {}

    def load(run_id: str) -> dict[str, Any] | None:
        return json.loads(table[run_id]) if run_id in table else None

    out: list[Alert] = []
    ev = AlertEvaluator(ALL_RULES)
    for i, event in enumerate(events):
        if i % 7 == 0:  # a new worker takes over: only the table survives
            ev = AlertEvaluator(ALL_RULES, loader=lambda _p, run_id: load(run_id))
        out += ev.observe(event)
        for project, run_id in ev.take_dirty():
            table[run_id] = json.dumps(ev.state_of(project, run_id), allow_nan=False)
    assert dumps(out) == whole
    assert ev.take_dirty() == []


def test_forget_and_state_of_unknown_run() -> None:
    ev = AlertEvaluator([NanRule(name="nan")])
    run = Run()
    ev.observe(run.log(1, loss=1.0))
    assert ev.known_runs() == [("vision", "r1")]
    assert ev.state_of("vision", "nope") is None
    assert ev.forget("vision", "r1") is True
    assert ev.forget("vision", "r1") is False
    assert ev.take_dirty() == []
    assert ev.state() == {"v": 1, "runs": []}


def test_bad_state_is_refused_clearly() -> None:
    with pytest.raises(AlertStateError, match="version 99"):
        AlertEvaluator.from_state([], {"v": 99, "runs": []})
    ev = AlertEvaluator([])
    with pytest.raises(AlertStateError, match="invalid run state"):
        ev.load_run_state({"v": 1, "project": "p"})


def test_naive_times_are_refused() -> None:
    ev = AlertEvaluator([])
    with pytest.raises(ValueError, match="timezone-aware"):
        ev.tick(datetime(2026, 1, 1))  # naive: the point of the test


# --- rule changes -----------------------------------------------------------------------------
def test_set_rules_resolves_episodes_of_removed_or_changed_rules_and_keeps_the_rest() -> None:
    keep = ThresholdRule(name="keep", metric="loss", above=1, for_steps=2)
    gone = NanRule(name="gone")
    changed = ThresholdRule(name="changed", metric="acc", above=0.5)
    ev = AlertEvaluator([keep, gone, changed])
    run = Run()
    out = feed(ev, [run.log(1, loss=2.0, acc=0.9, x=math.nan)])
    assert {a.rule for a in out} == {"gone", "changed"}

    out = ev.set_rules([keep, changed.model_copy(update={"above": 0.95})], at(50))
    assert sorted((a.rule, a.resolved_at) for a in out) == [
        ("changed", at(50)),
        ("gone", at(50)),
    ]
    # "keep" kept its count (1 step above): the next step above fires it.
    assert [a.rule for a in ev.observe(run.log(2, loss=2.0, acc=0.9))] == ["keep"]


def test_saved_state_of_a_changed_rule_is_resolved_at_the_next_event() -> None:
    rule = ThresholdRule(name="t", metric="loss", above=1)
    ev = AlertEvaluator([rule])
    run = Run()
    first = ev.observe(run.log(1, loss=2.0))
    saved = ev.state_of("vision", "r1")
    assert saved is not None

    stricter = rule.model_copy(update={"above": 5.0})
    ev2 = AlertEvaluator([stricter], loader=lambda _p, _r: saved)
    out = ev2.observe(run.log(2, loss=3.0))
    assert [(a.alert_id, a.resolved_at) for a in out] == [(first[0].alert_id, at(2))]
    out = ev2.observe(run.log(3, loss=6.0))
    assert [a.alert_id for a in out] == [alert_id("t", "vision", "r1", "loss", 2)]  # counts on


# --- rule files -------------------------------------------------------------------------------
EXAMPLE = """
# Alert rules of the vision team.
[[rule]]
name = "loss-high"
kind = "threshold"
project = "vision"
tags = ["prod"]
metric = "loss"
above = 10
for_steps = 3
level = "error"

[[rule]]
name = "nan"
kind = "nan"

[[rule]]
name = "val-plateau"
kind = "plateau"
metric = "val/*"
mode = "min"
patience = 5
min_delta = 0.001

[[rule]]
name = "diverging"
kind = "divergence"
metric = "loss"
rise_pct = 50
window = 20

[[rule]]
name = "failed"
kind = "run_failed"
statuses = ["failed", "crashed"]

[[rule]]
name = "stalled"
kind = "stalled"
after_seconds = 600
group = "sweep-1"

[[rule]]
name = "user"
kind = "user"
enabled = false
"""


def test_load_rules_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    rules = load_rules(path)
    assert [type(r).__name__ for r in rules] == [
        "ThresholdRule",
        "NanRule",
        "PlateauRule",
        "DivergenceRule",
        "RunFailedRule",
        "StalledRule",
        "UserRule",
    ]
    high = rules[0]
    assert isinstance(high, ThresholdRule)
    assert (high.above, high.below, high.for_steps, high.level, high.tags) == (
        10.0,
        None,
        3,
        "error",
        ("prod",),
    )
    assert rules[1].project == "*" and isinstance(rules[1], NanRule) and rules[1].metric == "*"
    assert rules[6].enabled is False


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    rules = loads_rules(EXAMPLE)
    tricky = ThresholdRule(
        name="we.ird_name-1",
        metric='val/"quoted"\\back\\slash\ttab*',
        project="proj\nnew line \x01 \x7f ünï 🚀",
        tags=("a b", 'q"t', "\\", ""),
        group="g'roup",
        below=-1e-5,
        above=1.5e300,
    )
    rules.append(tricky)
    text = dump_rules(rules)
    assert loads_rules(text) == rules
    path = tmp_path / "dumped.toml"
    path.write_text(text, encoding="utf-8")
    assert load_rules(path) == rules
    assert dump_rules(load_rules(path)) == text
    # Defaults are left out; name and kind always come first.
    assert dump_rules([NanRule(name="n")]) == '[[rule]]\nname = "n"\nkind = "nan"\n'


def test_dumped_example_is_readable() -> None:
    text = dump_rules(loads_rules(EXAMPLE)[:1])
    assert text == (
        "[[rule]]\n"
        'name = "loss-high"\n'
        'kind = "threshold"\n'
        'project = "vision"\n'
        'tags = ["prod"]\n'
        'metric = "loss"\n'
        "above = 10.0\n"
        "for_steps = 3\n"
        'level = "error"\n'
    )


Where = tuple[int | None, str | None, str | None]  # RuleError's index, rule and field
NOWHERE: Where = (None, None, None)
BAD_FILES: list[tuple[str, str, Where]] = [
    ("[[rule]]\nname = 'x'\nkind = ", "not valid TOML", NOWHERE),
    (
        "[[rule]]\nname = 'x'\nkind = 'thresh'",
        r"#1 \('x'\): 'kind' 'thresh' is unknown",
        (1, "x", "kind"),
    ),
    ("[[rule]]\nname = 'x'", r"rule #1 \('x'\): 'kind' is missing", (1, "x", "kind")),
    (
        "[[rule]]\nname = 'a'\nkind = 'nan'\n[[rule]]\nname = 'b'\nkind = 'threshold'\n"
        "metric = 'm'",
        r"rule #2 \('b'\): a threshold rule needs 'above', 'below' or both",
        (2, "b", ""),
    ),
    (
        "[[rule]]\nname = 'a'\nkind = 'plateau'\nmetric = 'm'",
        r"rule #1 \('a'\): 'patience' is required",
        (1, "a", "patience"),
    ),
    (
        "[[rule]]\nname = 'a'\nkind = 'nan'\nabvoe = 3",
        r"rule #1 \('a'\): unknown field 'abvoe'",
        (1, "a", "abvoe"),
    ),
    (
        "[[rule]]\nname = 'a'\nkind = 'threshold'\nmetric = 'm'\nabove = 'high'",
        r"rule #1 \('a'\): 'above': Input should be a valid number",
        (1, "a", "above"),
    ),
    (
        "[[rule]]\nname = 'bad name!'\nkind = 'nan'",
        r"rule #1 \('bad name!'\): 'name': String should match pattern",
        (1, "bad name!", "name"),
    ),
    (
        "[[rule]]\nname = 'a'\nkind = 'nan'\n[[rule]]\nname = 'a'\nkind = 'user'",
        r"rule #2 \('a'\): duplicate name: rule #1 is already called 'a'",
        (2, "a", "name"),
    ),
    ("[rule]\nname = 'a'", r"write \[\[rule\]\], not \[rule\]", NOWHERE),
    ("[[rules]]\nname = 'a'", "unknown top-level key", NOWHERE),
    (
        "[[rule]]\nname = 'a'\nkind = 'threshold'\nmetric = 'm'\nabove = 1\nbelow = 2",
        "'below' .* is greater than 'above'",
        (1, "a", ""),
    ),
    (
        "[[rule]]\nname = 'a'\nkind = 'divergence'\nmetric = 'm'\nrise_pct = nan\nwindow = 3",
        r"'rise_pct': Input should be a finite number",
        (1, "a", "rise_pct"),
    ),
    ("[[rule]]\nname = 'user'\nkind = 'nan'", "reserved for rules of kind 'user'", (1, "user", "")),
]


@pytest.mark.parametrize(("text", "message", "where"), BAD_FILES)
def test_bad_rule_files_say_where(tmp_path: Path, text: str, message: str, where: Where) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleError, match=message) as caught:
        load_rules(path)
    err = caught.value
    assert str(err).startswith(str(path))
    assert isinstance(err, RunstreamError)
    assert (err.index, err.rule, err.field) == where


def test_missing_rule_file() -> None:
    with pytest.raises(RuleError, match="cannot read the rule file"):
        load_rules("/nonexistent/rules.toml")


def test_rules_from_dicts_and_the_rule_set() -> None:
    rule = parse_rule({"name": "hot", "kind": "threshold", "metric": "gpu.*.temp", "above": 85})
    rules = RuleSet([rule, {"name": "nan", "kind": "nan"}])
    assert rules.names == ["hot", "nan"] and len(rules) == 2 and "hot" in rules
    assert rules.by_name("hot") is rule
    with pytest.raises(RuleError, match="a rule named 'hot' already exists"):
        rules.add({"name": "hot", "kind": "nan"})
    with pytest.raises(RuleError, match="no rule named 'cold'"):
        rules.by_name("cold")
    with pytest.raises(RuleError, match="no rule named 'cold'"):
        rules.remove("cold")
    rules.replace({"name": "hot", "kind": "threshold", "metric": "gpu.*.temp", "above": 90})
    assert isinstance(rules.by_name("hot"), ThresholdRule)
    assert rules.remove("nan").name == "nan" and rules.names == ["hot"]
    assert loads_rules(rules.dump()) == rules.to_list()
    with pytest.raises(RuleError, match="unique"):
        AlertEvaluator([rule, rule])
    with pytest.raises(RuleError, match=r"rule #2 \('x'\): 'kind' is missing") as caught:
        rules.add({"name": "x"})
    assert caught.value.field == "kind" and "x" not in rules


def test_glob_matching_rules() -> None:
    ev = AlertEvaluator(
        [
            NanRule(name="gpu", metric="gpu.?.temp"),
            NanRule(name="literal", metric="acc[0]"),  # equal names match, brackets or not
            NanRule(name="class", metric="layer[12]/*"),
        ]
    )
    run = Run()
    metrics = {
        "gpu.0.temp": math.nan,
        "gpu.10.temp": math.nan,
        "acc[0]": math.nan,
        "layer1/w": math.nan,
        "layer3/w": math.nan,
        "Layer1/w": math.nan,  # case-sensitive
    }
    out = ev.observe(run.metrics(1, metrics))
    assert sorted((a.rule, a.metric) for a in out) == [
        ("class", "layer1/w"),
        ("gpu", "gpu.0.temp"),
        ("literal", "acc[0]"),
    ]


# --- sanity at volume (no timing asserts) -----------------------------------------------------
def test_many_events_many_runs() -> None:
    rules: list[Rule] = [
        NanRule(name="nan"),
        ThresholdRule(name="t", metric="m0", above=5),
        DivergenceRule(name="d", metric="m1", rise_pct=1000, window=50),
        PlateauRule(name="p", metric="m2", patience=10_000),
    ]
    ev = AlertEvaluator(rules)
    runs = [Run(f"run-{i}") for i in range(5)]
    events = [
        run.metrics(step, {f"m{k}": 1 + ((step * 7 + k) % 10) / 10 for k in range(10)})
        for step in range(400)
        for run in runs
    ]
    out = feed(ev, events)
    assert out == []  # values in [1, 1.9]: no rule's condition ever holds
    state = ev.state()
    assert len(state["runs"]) == 5
    assert all(len(r["tracks"]) == 13 for r in state["runs"])  # 10 nan + t + d + p
    json.dumps(state, allow_nan=False)
