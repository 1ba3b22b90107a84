"""Migration 0013's runs_current (named runs_computed since 0014, which stores its rows) says
exactly what 0011's said, and Api.runs pages come out as slices of the whole list."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import runstream
from runstream.settings import Settings
from runstream.sinks import migrations
from runstream.sinks.clickhouse import connect
from tests.conftest import Services, isolated_settings
from tests.cookbook_data import generate as cookbook_world
from tests.cookbook_data import seed as cookbook_seed
from tests.helpers import land_events, rows, scalar

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)

# (project, run_id, [(type, body), ...]): seq is the place in the list. Each run hits a rule of
# docs/sql.md "runs_current" / "The summary".
RUNS: list[tuple[str, str, list[tuple[str, dict[str, Any]]]]] = [
    ("p", "full", [
        ("run_started", {"name": "a", "config": {"lr": 1.0, "b": [1, 2], "gone": 1e20},
                         "tags": ["x"], "environment": {"python": "3.11"}}),
        ("metric_defined", {"name": "loss", "summary": "min"}),
        ("metric_defined", {"name": "val/*", "summary": "max"}),
        ("metric_defined", {"name": "val/*", "step_metric": "epoch"}),  # no summary: no choice
        ("metrics_logged", {"step": 0, "metrics": {"loss": 2.0, "val/acc": 0.5, "acc": 3}}),
        ("config_updated", {"config": {"gone": None, "new": {"k": -0.0}}}),
        ("metrics_logged", {"step": 1, "metrics": {"loss": 1.0, "val/acc": 0.25, "acc": "NaN"}}),
        ("summary_updated", {"summary": {"best": 7, "loss": 0.5, "note": "hi"}}),
        ("run_updated", {"name": "renamed", "notes": "n"}),
        ("summary_updated", {"summary": {"best": None, "acc": 1.5, "val/acc": 9}}),  # closing
        ("run_finished", {"status": "failed", "exit_code": 3}),
    ]),
    ("p", "metrics-only", [  # no run_fields row at all: config and summary still read '{}'...
        ("metrics_logged", {"step": 5, "metrics": {"x": "Infinity", "y": "NaN"}}),
    ]),
    ("p", "restarted", [  # a later run_started: config counts from it, its name wins again
        ("run_started", {"name": "one", "config": {"a": 1, "b": 2}}),
        ("config_updated", {"config": {"c": 3}}),
        ("run_updated", {"name": "two"}),
        ("run_started", {"name": "three", "config": {"b": 20}}),
        ("config_updated", {"config": {"a": 10, "b": None}}),
        ("metric_defined", {"name": "m", "summary": "mean"}),
        ("metric_defined", {"name": "m", "summary": "last"}),
        ("metrics_logged", {"step": 0, "metrics": {"m": 1, "mm": 2}}),
        ("metrics_logged", {"step": 1, "metrics": {"m": 4, "mm": 4}}),
    ]),
    ("q", "explicit-only", [
        ("run_started", {"config": {}}),
        ("summary_updated", {"summary": {"z": 1, "a": "s", "m": None}}),
        ("summary_updated", {"summary": {"z": 2.5}}),
        ("heartbeat", {"step": 3}),
    ]),
    ("q", "all-nan", [
        ("run_started", {"name": "", "config": {"x": None}}),  # null in run_started: kept
        ("metric_defined", {"name": "l", "summary": "min"}),
        ("metrics_logged", {"step": 0, "metrics": {"l": "NaN"}}),
        ("run_finished", {"status": "finished", "exit_code": 0}),
    ]),
]  # fmt: skip


def _event_rows() -> list[list[Any]]:
    out: list[list[Any]] = []
    for project, run_id, events in RUNS:
        for seq, (type_, body) in enumerate(events):
            ts = T0 + timedelta(seconds=seq)
            out.append([uuid.uuid4(), 1, type_, project, run_id, seq, ts, "runstream-python",
                        "test", "host", 1, json.dumps(body), 0, len(out)])  # fmt: skip
    return out


def _old_view(settings: Settings) -> None:
    """0011's runs_current as runs_current_0011, next to 0013's."""
    migration = next(m for m in migrations.available() if m.version == 11)
    statement = migration.statements(settings.clickhouse_database)[-1]
    assert statement.startswith("CREATE OR REPLACE VIEW") and ".runs_current AS" in statement
    connect(settings).command(statement.replace(".runs_current AS", ".runs_current_0011 AS", 1))


@pytest.fixture(scope="module")
def seeded(services: Services) -> Iterator[Settings]:
    settings = isolated_settings(services, "runs13")
    land_events(settings, _event_rows())
    cookbook_seed(settings, cookbook_world(T0 + timedelta(days=2)))
    _old_view(settings)
    yield settings


def test_runs_computed_is_0011s_row_for_row_and_runs_current_stores_it(seeded: Settings) -> None:
    differ = "SELECT count() FROM (SELECT * FROM {a} EXCEPT SELECT * FROM {b})"
    assert scalar(seeded, "SELECT count() FROM runs_computed") > 20
    types = [rows(seeded, f"DESCRIBE {v}") for v in ("runs_computed", "runs_current_0011")]
    assert [r[:2] for r in types[0]] == [r[:2] for r in types[1]]
    for a, b in (("runs_computed", "runs_current_0011"), ("runs_current_0011", "runs_computed")):
        assert scalar(seeded, differ.format(a=a, b=b)) == 0
    for a, b in (("runs_current", "runs_computed"), ("runs_computed", "runs_current")):
        assert scalar(seeded, differ.format(a=a, b=b)) == 0
    got = dict(rows(seeded, "SELECT run_id, tuple(config, summary) FROM runs_current"))
    assert got["metrics-only"] == ("{}", '{"x":"Infinity","y":"NaN"}')
    assert got["explicit-only"] == ("{}", '{"a":"s","z":2.5}')
    assert got["restarted"] == ('{"a":10}', '{"m":4.0,"mm":4.0}')
    assert got["all-nan"] == ('{"x":null}', '{"l":null}')


def test_a_filter_on_run_id_reads_one_run(seeded: Settings) -> None:
    for view in ("runs_current", "runs_computed", "runs_brief"):
        sql = f"EXPLAIN indexes = 1 SELECT * FROM {view} WHERE project = 'p' AND run_id = 'full'"
        plan = "\n".join(r[0] for r in rows(seeded, sql))
        assert "Condition: true" not in plan, plan


def test_runs_brief_is_runs_computed_without_documents(seeded: Settings) -> None:
    columns = [r[0] for r in rows(seeded, "DESCRIBE runs_computed")]
    brief = [r[0] for r in rows(seeded, "DESCRIBE runs_brief")]
    assert brief == [c for c in columns if c not in ("config", "summary", "environment")]
    listed = ", ".join(f"`{c}`" for c in brief)
    assert scalar(seeded, f"SELECT count() FROM (SELECT {listed} FROM runs_computed "
                          f"EXCEPT SELECT {listed} FROM runs_brief)") == 0  # fmt: skip


@pytest.mark.parametrize("arrow", [True, False])
def test_pages_are_slices_of_the_whole_list(
    seeded: Settings, arrow: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runstream.read.api as module

    if not arrow:
        monkeypatch.setattr(module, "has_arrow", lambda: False)
    with runstream.Api(settings=seeded) as api:
        cases: list[dict[str, Any]] = [
            {"project": "vision"},
            {"project": "vision", "order_by": ["status", "-name"]},
            {"where": 'status == "finished" or "x" in tags', "order_by": "started_at"},
            {"order_by": ["-finished_at", "created_at"]},
            {"where": "config.lr >= 0.001", "order_by": ["summary.loss", "-name"]},
        ]
        for case in cases:
            whole = api.runs(**case)
            assert whole.total == len(whole) > 0
            for limit, offset in ((3, 0), (3, 3), (1000, 0), (2, len(whole) - 1)):
                page = api.runs(**case, limit=limit, offset=offset)
                assert page.total == whole.total
                assert page.columns == whole.columns
                assert page.to_records() == whole.to_records()[offset : offset + limit]
        assert api.runs(project="nowhere", limit=5).total == 0
        assert len(api.runs(project="nowhere", limit=5).to_records()) == 0
        past = api.runs(project="vision", limit=5, offset=10_000)
        assert len(past) == 0 and past.total == api.runs(project="vision").total
