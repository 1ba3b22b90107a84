"""The batch fold (a column at a time) against the fold point by point: the same state, field
for field, whatever the batches, the values (NaN, infinities, ties, -0.0), the order of steps,
the duplicates and the other events among the metrics."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest

from runstream.processors.aggregates import (
    fold_batch,
    fold_point,
    fold_run,
    mark_crashed,
    new_run_state,
    new_summary,
)
from runstream.processors.decoding import decode_event
from runstream.schemas import encode
from runstream.schemas.events import dump_metric_value
from tests.samples import same, sample_event

VALUES = [0.0, -0.0, 1.0, 1.0, 2.5, -3.0, 1e308, math.nan, math.inf, -math.inf]


def random_events(rng: random.Random, count: int, *, odd: bool) -> list[Any]:
    """Decoded events of one run: mostly metrics, sometimes others; re-sent ones when odd."""
    events: list[Any] = []
    step = 0
    names = ["loss", "acc", "lr", "grad/norm"]
    for seq in range(count):
        kind = rng.random()
        if kind < 0.08:
            raw = sample_event("heartbeat", seq=seq, run_id="r")
            raw["body"] = {"step": step + rng.randint(-1, 2)}
        elif kind < 0.1:
            raw = sample_event("run_finished", seq=seq, run_id="r")
        elif kind < 0.12:
            raw = sample_event("run_resumed", seq=seq, run_id="r")
        else:
            step += rng.choice([0, 1, 1, 1, 2]) if not odd or rng.random() > 0.1 else -3
            step = max(step, 0)
            chosen = names if rng.random() < 0.7 else rng.sample(names, rng.randint(1, 4))
            if odd and rng.random() < 0.2:
                chosen = list(reversed(chosen))  # the same names in another order
            plain = rng.random() < (0.5 if odd else 0.97)
            # Few distinct values, so minima and maxima tie across batches; odd runs get NaN,
            # infinities and -0.0 now and then (a column with one is folded point by point).
            values = [
                rng.choice(VALUES) if odd and rng.random() < 0.02 else rng.randint(0, 8) / 4
                for _ in chosen
            ]
            raw = sample_event("metrics_logged", seq=seq, run_id="r")
            raw["body"] = {
                "step": step,
                "metrics": {n: dump_metric_value(v) for n, v in zip(chosen, values, strict=True)},
            }
            if not plain:
                raw["note"] = "an unknown field: read by the schema, not the quick path"
        raw["ts"] = f"2026-11-28T12:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq:06d}Z"
        events.append(decode_event(encode(raw)))
        if odd and rng.random() < 0.1:
            events.append(events[-1])  # re-sent
        if odd and rng.random() < 0.05 and seq > 3:
            events.append(events[-3])  # re-sent late
    return events


def point_by_point(events: list[Any], crash_at: set[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    state = new_run_state("p", "r")
    summaries: dict[str, Any] = {}
    for i, event in enumerate(events):
        if i in crash_at:
            mark_crashed(state, event.ts)
        if not fold_run(state, event, 3) or event.type != "metrics_logged":
            continue
        for name, value in event.body.metrics.items():
            summary = summaries.setdefault(name, new_summary("p", "r", name))
            fold_point(summary, value, event.body.step, event.seq)
    return state, summaries


def batched(
    events: list[Any], crash_at: set[int], rng: random.Random
) -> tuple[dict[str, Any], dict[str, Any]]:
    state = new_run_state("p", "r")
    summaries: dict[str, Any] = {}
    cuts = sorted({0, len(events), *crash_at, *rng.sample(range(len(events)), 5)})
    for start, end in itertools.pairwise(cuts):
        if start in crash_at:
            mark_crashed(state, events[start].ts)
        fold_batch(state, summaries, events[start:end], 3)
    return state, summaries


@pytest.mark.parametrize("seed", range(40))
def test_the_batch_fold_equals_the_fold_point_by_point(seed: int) -> None:
    rng = random.Random(seed)
    events = random_events(rng, 200, odd=seed % 2 == 1)
    crash_at = set(rng.sample(range(len(events)), 2)) if seed % 3 == 0 else set()
    expected = point_by_point(events, crash_at)
    found = batched(events, crash_at, rng)
    assert same(found[0], expected[0])
    assert found[1].keys() == expected[1].keys()
    for name in expected[1]:
        assert same(found[1][name], expected[1][name]), name


def test_the_batch_fold_returns_what_it_folded_and_the_metrics_touched() -> None:
    events = random_events(random.Random(7), 30, odd=False)
    state = new_run_state("p", "r")
    summaries: dict[str, Any] = {}
    folded, touched = fold_batch(state, summaries, events + events[:5], 0)
    assert folded == events  # the re-sent five left out
    assert touched == set(summaries)
    assert fold_batch(state, summaries, events, 0) == ([], set())


def test_a_null_in_a_config_patch_removes_the_key_as_runs_current_does() -> None:
    state = new_run_state("vision", "abc123")
    fold_run(state, decode_event(encode(sample_event("run_started", seq=0))))
    assert state["config"]["lr"] == 0.001
    patch = sample_event("config_updated", seq=1)
    patch["body"]["config"] = {"lr": None, "batch_size": 256}
    fold_run(state, decode_event(encode(patch)))
    assert "lr" not in state["config"]
    assert state["config"]["batch_size"] == 256
    assert state["config"]["optim"] == {"name": "adam", "betas": [0.9, 0.999]}
