"""The SQL cookbook of docs/sql.md ("Cookbook: twenty questions"), run as written.

Each query is taken from the page by its ``<!-- cookbook: name -->`` marker, so the page and the
tests cannot drift apart, and runs through the read layer (:class:`runstream.read.Reader`:
read-only, parameters bound server-side) against a database seeded with generated runs. The
events go into ``events`` as the sink writes them, so every table and view the queries read is
derived by the materialized views as in production; processor alerts go into ``alerts`` as the
processors write them. Every expected answer is computed in Python from the generated runs, never
by running SQL.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from runstream.read import Reader
from tests.conftest import Services, isolated_settings
from tests.cookbook_data import OTHER, PROJECT, Run, World, generate, seed

DOC = Path(__file__).resolve().parents[1] / "docs" / "sql.md"
SECTION = "## Cookbook: twenty questions"
_MARKED = re.compile(r"<!-- cookbook: ([a-z0-9_]+) -->\s*```sql\n(.*?)```", re.S)


def cookbook() -> dict[str, str]:
    """name -> SQL of every marked query of the cookbook section."""
    text = DOC.read_text()
    assert SECTION in text, f"{DOC} has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = _MARKED.findall(section)
    queries = dict(found)
    assert len(queries) == len(found), "two cookbook queries share a marker name"
    return queries


@pytest.fixture(scope="module")
def world() -> World:
    return generate(datetime.now(timezone.utc).replace(tzinfo=None))


@pytest.fixture(scope="module")
def reader(services: Services, world: World) -> Iterator[Reader]:
    settings = isolated_settings(services, prefix="cb")
    seed(settings, world)
    with Reader(settings) as reader:
        yield reader


def ask(reader: Reader, name: str, **parameters: Any) -> list[dict[str, Any]]:
    """The cookbook query `name` as docs/sql.md has it, through the read layer."""
    return reader.query(cookbook()[name], parameters).records()


# --- the page itself ---------------------------------------------------------------------------


def test_the_cookbook_has_twenty_named_queries_each_with_a_question_and_a_note() -> None:
    queries = cookbook()
    assert len(queries) == 20
    section = DOC.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    for name in queries:
        before, after = section.split(f"<!-- cookbook: {name} -->", 1)
        assert before.rstrip().splitlines()[-1].startswith("**"), f"{name}: no question above"
        note = after.split("```", 2)[2].lstrip()
        assert note.startswith("Watch for:"), f"{name}: no 'Watch for:' note below"
    tested = {n.removeprefix("test_") for n in globals() if n.startswith("test_")}
    assert set(queries) <= tested, f"queries without a test: {set(queries) - tested}"


# --- helpers for the expected answers -----------------------------------------------------------


def finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def last_value(run: Run, metric: str) -> float:
    return run.series(metric)[-1][1]


def approx(x: float) -> Any:
    return pytest.approx(x, rel=1e-9, abs=1e-12)


# --- the twenty ----------------------------------------------------------------------------------


def test_best_lr_per_model_size(reader: Reader, world: World) -> None:
    best: dict[str, tuple[float, float, str]] = {}
    for run in world.of():
        values = finite([v for _, v in run.series("val/loss")])
        if not values:
            continue
        size, low = run.config["model_size"], min(values)
        if size not in best or low < best[size][1]:
            best[size] = (run.config["lr"], low, run.run_id)
    got = ask(reader, "best_lr_per_model_size", project=PROJECT)
    assert [r["model_size"] for r in got] == sorted(best)
    for r in got:
        lr, low, run_id = best[r["model_size"]]
        assert (r["best_lr"], r["run_id"]) == (lr, run_id)
        assert r["best_val_loss"] == approx(low)


def test_diverged_runs(reader: Reader, world: World) -> None:
    window, rise = 50, 0.5
    expected = {}
    for run in world.of():
        series = run.series("loss")
        last = series[-1][0]
        recent = [v for s, v in series if s >= last - window]
        bad = sum(not math.isfinite(v) for _, v in series)
        if bad or recent[-1] > recent[0] * (1 + rise):
            expected[run.run_id] = bad
    got = ask(reader, "diverged_runs", project=PROJECT, window=window, rise=rise)
    assert {r["run_id"]: r["non_finite_points"] for r in got} == expected
    # The three kinds of divergence the generator made: NaN, +inf and a rising loss.
    assert {"l-0_003-0", "m-0_003-2", "l-0_003-1"} <= set(expected)


def test_gpu_hours_per_project_week(reader: Reader, world: World) -> None:
    since = world.now - timedelta(days=60)
    hours: dict[tuple[str, date], float] = defaultdict(float)
    counts: dict[tuple[str, date], int] = defaultdict(int)
    for run in world.runs:
        week = run.started.date() - timedelta(days=run.started.weekday())
        end = run.finished_at or run.last_event_at
        hours[run.project, week] += (end - run.started) / timedelta(hours=1) * run.config["gpus"]
        counts[run.project, week] += 1
    got = ask(reader, "gpu_hours_per_project_week", since=since)
    assert [(r["project"], r["week"]) for r in got] == sorted(hours)
    for r in got:
        assert r["gpu_hours"] == pytest.approx(hours[r["project"], r["week"]], abs=0.0005)
        assert r["runs"] == counts[r["project"], r["week"]]


def test_alerts_per_rule(reader: Reader, world: World) -> None:
    latest: dict[str, dict[str, Any]] = {}
    for a in world.alerts:
        if a["project"] == PROJECT and (
            a["alert_id"] not in latest or a["updated_at"] > latest[a["alert_id"]]["updated_at"]
        ):
            latest[a["alert_id"]] = a
    for run in world.of():  # alert_raised events: rule 'user', one alert per event
        for i, _ in enumerate(run.user_alerts):
            latest[f"{run.run_id}/{i}"] = {
                "rule": "user",
                "run_id": run.run_id,
                "resolved_at": None,
            }
    per_rule: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in latest.values():
        per_rule[a["rule"]].append(a)
    expected = sorted(
        (
            (-len(v), rule, sum(a["resolved_at"] is None for a in v), len({a["run_id"] for a in v}))
            for rule, v in per_rule.items()
        )
    )
    got = ask(reader, "alerts_per_rule", project=PROJECT)
    assert [(-r["alerts"], r["rule"], r["open"], r["runs"]) for r in got] == expected


def test_curves_side_by_side(reader: Reader, world: World) -> None:
    # Two runs whose loss is logged at different steps and up to different last steps.
    runs = world.of()
    a = next(r for r in runs if len(r.points["loss"]) > 20 and max(r.points["loss"]) == 300)
    b = next(r for r in runs if len(r.points["loss"]) < 15 and max(r.points["loss"]) < 300)
    parameters = {"project": PROJECT, "run_a": a.run_id, "run_b": b.run_id, "metric": "loss"}
    got = ask(reader, "curves_side_by_side", **parameters)
    steps = sorted(set(a.points["loss"]) | set(b.points["loss"]))
    assert [r["step"] for r in got] == steps
    for r in got:
        for run, column in ((a, "run_a"), (b, "run_b")):
            want = run.points["loss"].get(r["step"])
            assert r[column] == (None if want is None else approx(want)) or (
                want is not None and math.isnan(want) and math.isnan(r[column])
            )


def test_stale_running_runs(reader: Reader, world: World) -> None:
    minutes = 5
    cutoff = world.now - timedelta(minutes=minutes)
    expected = sorted(
        r.run_id
        for r in world.of()
        if r.status == "running"
        and (max(t for t, _ in r.heartbeats) if r.heartbeats else r.last_event_at) < cutoff
    )
    got = ask(reader, "stale_running_runs", project=PROJECT, minutes=minutes)
    assert [r["run_id"] for r in got] == expected == ["l-0_0003-2", "m-0_0003-2"]
    silent = next(r for r in got if r["run_id"] == "l-0_0003-2")
    assert silent["last_heartbeat"] is None


def test_first_step_reaching_target(reader: Reader, world: World) -> None:
    target = 0.84
    expected = {}
    for run in world.of():
        reached = [s for s, v in run.series("val/acc") if v >= target]
        if reached:
            expected[run.run_id] = (reached[0], run.ts(reached[0]))
    assert 0 < len(expected) < len(world.of())
    got = ask(reader, "first_step_reaching_target", project=PROJECT, target=target)
    assert {r["run_id"]: (r["step"], r["reached_at"].replace(tzinfo=None)) for r in got} == expected


def test_config_diff(reader: Reader, world: World) -> None:
    runs = world.of()
    a = next(r for r in runs if "warmup" in r.config)
    b = next(
        r
        for r in runs
        if "warmup" not in r.config and r.config["optimizer"] != a.config["optimizer"]
    )
    keys = sorted(
        k for k in a.config.keys() | b.config.keys() if a.config.get(k) != b.config.get(k)
    )
    assert {"warmup", "optimizer"} <= set(keys)
    got = ask(reader, "config_diff", project=PROJECT, run_a=a.run_id, run_b=b.run_id)
    assert [r["key"] for r in got] == keys
    for r in got:
        for run, column in ((a, "value_a"), (b, "value_b")):
            want = run.config.get(r["key"])
            assert (json.loads(r[column]) if r[column] else None) == want
    # Another project has no such runs: both configs read as empty, nothing differs.
    assert ask(reader, "config_diff", project=OTHER, run_a=a.run_id, run_b=b.run_id) == []


def test_top_k_per_group(reader: Reader, world: World) -> None:
    k = 2
    by_group: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for run in world.of():
        accs = [v for _, v in run.series("val/acc")]
        if accs:
            by_group[run.group].append((max(accs), run.run_id))  # define_metric summary="max"
    expected = [
        (group, run_id, acc)
        for group in sorted(by_group)
        for acc, run_id in sorted(by_group[group], key=lambda t: (-t[0], t[1]))[:k]
    ]
    got = ask(reader, "top_k_per_group", project=PROJECT, k=k)
    assert [(r["group"], r["run_id"]) for r in got] == [(g, i) for g, i, _ in expected]
    assert [r["val_acc"] for r in got] == [approx(a) for _, _, a in expected]


def test_final_val_loss_across_seeds(reader: Reader, world: World) -> None:
    groups: dict[float, list[float]] = defaultdict(list)
    for run in world.of():
        if run.status == "finished" and run.series("val/loss"):
            final = last_value(run, "val/loss")
            if math.isfinite(final):
                groups[run.config["lr"]].append(final)
    got = ask(reader, "final_val_loss_across_seeds", project=PROJECT, key="lr")
    assert sorted(float(r["value"]) for r in got) == sorted(groups)
    for r in got:
        values = groups[float(r["value"])]
        assert r["seeds"] == len(values)
        assert r["mean_val_loss"] == approx(statistics.fmean(values))
        assert r["std_val_loss"] == pytest.approx(statistics.stdev(values), rel=1e-9)
    by_optimizer = ask(reader, "final_val_loss_across_seeds", project=PROJECT, key="optimizer")
    assert {r["value"] for r in by_optimizer} == {'"adam"', '"sgd"'}


def test_throughput_per_run(reader: Reader, world: World) -> None:
    expected = {}
    for run in world.of():
        steps = sorted(run.points["loss"])
        seconds = (run.ts(steps[-1]) - run.ts(steps[0])).total_seconds()
        expected[run.run_id] = ((steps[-1] - steps[0]) / seconds, seconds / (steps[-1] - steps[0]))
    got = ask(reader, "throughput_per_run", project=PROJECT)
    assert {r["run_id"] for r in got} == set(expected)
    assert [r["steps_per_second"] for r in got] == sorted(
        (r["steps_per_second"] for r in got), reverse=True
    )
    for r in got:
        per_second, per_step = expected[r["run_id"]]
        assert r["steps_per_second"] == approx(per_second)
        assert r["seconds_per_step"] == approx(per_step)
        assert r["seconds_per_step"] == pytest.approx(world.run(r["run_id"]).dt, rel=1e-4)


def test_best_epoch_not_last(reader: Reader, world: World) -> None:
    expected = {}
    for run in world.of():
        series = run.series("val/loss")
        values = finite([v for _, v in series])
        if not values:
            continue
        low = min(values)
        best_step = next(s for s, v in series if v == low)
        last_step, last = series[-1]
        if best_step < last_step and last > low:
            expected[run.run_id] = (best_step, last_step, last - low)
    assert expected, "the generator made overfitting runs"
    got = ask(reader, "best_epoch_not_last", project=PROJECT)
    assert {r["run_id"]: (r["best_step"], r["last_step"]) for r in got} == {
        k: v[:2] for k, v in expected.items()
    }
    assert [r["worse_by"] for r in got] == sorted((v[2] for v in expected.values()), reverse=True)


def test_lr_schedule_against_loss(reader: Reader, world: World) -> None:
    run = next(r for r in world.of() if r.status == "finished" and len(r.points["loss"]) > 20)

    def at_or_before(metric: str, step: int) -> float:
        return [v for s, v in run.series(metric) if s <= step][-1]

    got = ask(reader, "lr_schedule_against_loss", project=PROJECT, run=run.run_id)
    assert [r["step"] for r in got] == sorted(run.points["loss"])
    for r in got:
        assert r["x"] == at_or_before("epoch", r["step"])  # `loss`'s step_metric
        assert r["lr"] == at_or_before("lr", r["step"])
        assert r["loss"] == approx(run.points["loss"][r["step"]])
    assert len({r["lr"] for r in got}) == len(run.points["lr"])  # the schedule halves each epoch


def test_final_accuracy_histogram(reader: Reader, world: World) -> None:
    width = 0.05
    bins: dict[float, int] = defaultdict(int)
    for run in world.of():
        if run.series("val/acc"):
            final = last_value(run, "val/acc")
            if math.isfinite(final):
                bins[math.floor(final / width) * width] += 1
    got = ask(reader, "final_accuracy_histogram", project=PROJECT, width=width)
    assert [(r["bin_low"], r["runs"]) for r in got] == sorted(bins.items())
    assert sum(bins.values()) == len([r for r in world.of() if r.series("val/acc")])


def test_tagged_finished_last_day(reader: Reader, world: World) -> None:
    cutoff = world.now - timedelta(hours=24)
    expected = sorted(
        (
            (r.finished_at, r.run_id)
            for r in world.of()
            if "baseline" in r.tags
            and r.status == "finished"
            and r.finished_at is not None
            and r.finished_at >= cutoff
        ),
        reverse=True,
    )
    got = ask(reader, "tagged_finished_last_day", project=PROJECT, tag="baseline")
    assert [r["run_id"] for r in got] == [run_id for _, run_id in expected]
    everything = [r for r in world.of() if "baseline" in r.tags and r.status == "finished"]
    assert 0 < len(expected) < len(everything)  # the 24 hours cut something off


def test_longest_runs(reader: Reader, world: World) -> None:
    n = 5

    def seconds(run: Run) -> int:  # dateDiff counts crossed second boundaries
        end = run.finished_at or run.last_event_at
        return int(
            end.replace(microsecond=0).timestamp() - run.started.replace(microsecond=0).timestamp()
        )

    expected = sorted(world.of(), key=lambda r: (-seconds(r), r.run_id))[:n]
    got = ask(reader, "longest_runs", project=PROJECT, n=n)
    assert [(r["run_id"], r["seconds"]) for r in got] == [(r.run_id, seconds(r)) for r in expected]


def test_moving_average(reader: Reader, world: World) -> None:
    window = 3
    run = next(r for r in world.of() if r.status == "finished" and len(r.points["loss"]) > 20)
    series = run.series("loss")
    parameters = {"project": PROJECT, "run": run.run_id, "metric": "loss", "window": window}
    got = ask(reader, "moving_average", **parameters)
    assert [r["step"] for r in got] == [s for s, _ in series]
    for i, r in enumerate(got):
        values = [v for _, v in series[max(0, i - window) : i + 1]]
        assert r["smoothed"] == approx(statistics.fmean(values))


def _inclusive_quantile(values: list[float], level: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default, Excel PERCENTILE.INC)."""
    ordered = sorted(values)
    position = level * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_percentiles_at_step(reader: Reader, world: World) -> None:
    step = 160  # nobody logs val/loss at 160: each run's value at 150 counts
    values = []
    for run in world.of():
        before = [v for s, v in run.series("val/loss") if s <= step]
        if before and math.isfinite(before[-1]):
            values.append(before[-1])
    got = ask(reader, "percentiles_at_step", project=PROJECT, step=step)
    assert len(got) == 1 and got[0]["runs"] == len(values)
    assert got[0]["p10_p50_p90"] == [
        approx(_inclusive_quantile(values, q)) for q in (0.1, 0.5, 0.9)
    ]


def test_artifacts_per_run(reader: Reader, world: World) -> None:
    expected = sorted(
        (-sum(a["size"] for a in r.artifacts), r.run_id, len(r.artifacts))
        for r in world.of()
        if r.artifacts
    )
    got = ask(reader, "artifacts_per_run", project=PROJECT)
    assert [(-r["bytes"], r["run_id"], r["artifacts"]) for r in got] == expected
    for r in got:
        assert sorted(r["names"]) == [a["name"] for a in world.run(r["run_id"]).artifacts]


def test_early_stopped_runs(reader: Reader, world: World) -> None:
    expected = sorted(
        (r.run_id, max(r.points["loss"]))
        for r in world.of()
        if r.status == "finished" and max(r.points["loss"]) < r.config["max_steps"]
    )
    assert expected
    got = ask(reader, "early_stopped_runs", project=PROJECT)
    assert [(r["run_id"], r["last_step"]) for r in got] == expected
    assert all(r["max_steps"] == 300 for r in got)
