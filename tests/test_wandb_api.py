"""``runstream.wandb.Api()``: wandb analysis code runs unchanged on runs in a real ClickHouse
(runs with filters and order, history to pandas, scan_history, summary and config), with
wandb's names, defaults and shapes."""

from __future__ import annotations

import copy
import inspect
import math
import pickle
import re
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from runstream import wandb
from runstream.errors import RunNotFoundError, WandbFilterError
from runstream.settings import Settings
from tests.conftest import Services, isolated_settings

pytestmark = pytest.mark.integration

PROJECT = "wapi"

# run id -> what it logs. Steps count from 0, one log() per step.
RUNS: dict[str, dict[str, Any]] = {
    "r1": {
        "name": "alpha",
        "config": {"lr": 0.01, "optimizer": {"name": "adam"}, "epochs": 10},
        "tags": ["baseline"],
        "group": "g",
        "job_type": "train",
        "notes": "first",
        "steps": 10,
        "val": {4: 0.5, 9: 0.2},
        "status": "finished",
        "exit_code": 0,
    },
    "r2": {
        "name": "beta",
        "config": {"lr": 0.001, "optimizer": {"name": "sgd"}, "epochs": 20},
        "tags": ["baseline", "big"],
        "group": "g",
        "job_type": "train",
        "notes": None,
        "steps": 20,
        "val": {9: 0.4, 19: 0.1},
        "status": "finished",
        "exit_code": 0,
    },
    "r3": {
        "name": "gamma",
        "config": {"lr": 0.1},
        "tags": [],
        "group": None,
        "job_type": None,
        "notes": None,
        "steps": 1,
        "val": {0: 0.9},
        "status": "failed",
        "exit_code": 1,
    },
    "r4": {
        "name": "delta",
        "config": {"lr": 0.05},
        "tags": ["baseline"],
        "group": None,
        "job_type": "eval",
        "notes": None,
        "steps": 2,
        "val": {1: float("nan")},
        "status": "crashed",
        "exit_code": 137,
    },
}


def train_loss(step: int) -> float:
    return 1.0 / (step + 1)


@pytest.fixture(scope="module")
def seeded(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One database for the module with the runs of RUNS, written by the SDK and landed."""
    import runstream
    from tests.helpers import sink_until

    settings = isolated_settings(
        services, prefix="wa", dir=tmp_path_factory.mktemp("spool"), finish_timeout=30.0
    )
    for run_id, spec in RUNS.items():
        run = runstream.init(
            settings=settings,
            id=run_id,
            project=PROJECT,
            name=spec["name"],
            config=spec["config"],
            tags=spec["tags"],
            group=spec["group"],
            job_type=spec["job_type"],
            notes=spec["notes"],
        )
        for step in range(spec["steps"]):
            point = {"train_loss": train_loss(step)}
            if step in spec["val"]:
                point["val_loss"] = spec["val"][step]
            run.log(point)
        assert run.finish(exit_code=spec["exit_code"], status=spec["status"]).ok
        time.sleep(0.01)  # created_at strictly in the order of RUNS

    points = sum(spec["steps"] + len(spec["val"]) for spec in RUNS.values())

    def landed(client: Any) -> bool:
        finished = client.command("SELECT count() FROM runs_current WHERE status != 'running'")
        return bool(
            finished == len(RUNS) and client.command("SELECT count() FROM metrics") == points
        )

    sink_until(settings, landed)
    return settings


@pytest.fixture
def env(seeded: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``wandb.Api()`` with no argument reads the module's database (RUNSTREAM_*)."""
    monkeypatch.setenv("RUNSTREAM_CLICKHOUSE_URL", seeded.clickhouse_url)
    monkeypatch.setenv("RUNSTREAM_CLICKHOUSE_DATABASE", seeded.clickhouse_database)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    return seeded


@pytest.fixture
def api(env: Settings) -> Iterator[wandb.Api]:
    yield wandb.Api()


# The analysis snippet: wandb's own docs' export-to-pandas example and a typical comparison,
# exactly as written for wandb (only the import differs).
SNIPPET = """
import pandas as pd
from runstream import wandb

api = wandb.Api()
entity, project = "my-team", "wapi"
runs = api.runs(entity + "/" + project)

summary_list, config_list, name_list = [], [], []
for run in runs:
    summary_list.append(run.summary._json_dict)
    config_list.append({k: v for k, v in run.config.items() if not k.startswith("_")})
    name_list.append(run.name)
runs_df = pd.DataFrame({"summary": summary_list, "config": config_list, "name": name_list})

best = api.runs(
    f"{entity}/{project}",
    filters={"$and": [{"state": "finished"}, {"config.lr": {"$lte": 0.01}},
                      {"tags": {"$in": ["baseline"]}}]},
    order="-summary_metrics.val_loss",
    per_page=50,
)
rows = []
for run in best:
    history = run.history(keys=["val_loss"], samples=500)
    rows.append({
        "id": run.id, "name": run.name, "lr": run.config["lr"], "state": run.state,
        "best_val": history["val_loss"].min(), "final_val": run.summary["val_loss"],
        "steps": run.summary["_step"], "created": run.created_at,
    })
table = pd.DataFrame(rows)

one = api.run(f"{entity}/{project}/r2")
curve = [row["train_loss"] for row in one.scan_history(keys=["train_loss"], page_size=1000)]
full = one.history()
"""


def test_a_wandb_analysis_snippet_runs_unchanged(env: Settings) -> None:
    scope: dict[str, Any] = {}
    exec(compile(textwrap.dedent(SNIPPET), "<analysis>", "exec"), scope)

    runs_df = scope["runs_df"]
    assert list(runs_df["name"]) == ["alpha", "beta", "gamma", "delta"]  # oldest first
    assert runs_df["config"][0] == RUNS["r1"]["config"]
    assert runs_df["summary"][1]["val_loss"] == 0.1 and runs_df["summary"][1]["_step"] == 19

    table = scope["table"]
    assert list(table["id"]) == ["r1", "r2"]  # descending final val_loss: 0.2, then 0.1
    assert list(table["best_val"]) == [0.2, 0.1]
    assert list(table["final_val"]) == [0.2, 0.1]
    assert list(table["steps"]) == [9, 19]
    assert set(table["state"]) == {"finished"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", c) for c in table["created"])

    assert scope["curve"] == [train_loss(s) for s in range(20)]
    full = scope["full"]
    assert list(full.columns) == ["_step", "_timestamp", "_runtime", "train_loss", "val_loss"]
    assert list(full["_step"]) == list(range(20))
    assert full["val_loss"].notna().sum() == 2


def test_runs_len_indexing_slices_and_pages(api: wandb.Api) -> None:
    runs = api.runs(PROJECT, per_page=1)
    assert len(runs) == 4
    assert [r.id for r in runs] == ["r1", "r2", "r3", "r4"]
    assert runs[-1].id == "r4" and runs[0].id == "r1"
    assert [r.id for r in runs[1:3]] == ["r2", "r3"]
    assert [r.id for r in runs[::-2]] == ["r4", "r2"]
    with pytest.raises(IndexError):
        runs[4]
    assert [r.id for r in api.runs(PROJECT, order="-created_at")] == ["r4", "r3", "r2", "r1"]
    assert [r.id for r in api.runs(PROJECT, order="+config.lr")] == ["r2", "r1", "r4", "r3"]
    assert [r.id for r in api.runs(PROJECT, order="config.lr.value")] == ["r2", "r1", "r4", "r3"]
    assert [r.id for r in api.runs(PROJECT, order="-display_name")] == ["r3", "r4", "r2", "r1"]
    assert len(api.runs("someone/nothing-here")) == 0
    assert list(api.runs("nothing-here")) == []
    assert len(api.runs()) == 4  # no project: every project


@pytest.mark.parametrize("order", ["+created_at", "-summary_metrics.val_loss", "config.lr"])
def test_pages_of_any_size_read_the_same_runs_in_the_same_order(api: wandb.Api, order: str) -> None:
    whole = [r.id for r in api.runs(PROJECT, order=order, per_page=50)]
    assert sorted(whole) == sorted(RUNS)
    for per_page in (1, 3):
        runs = api.runs(PROJECT, order=order, per_page=per_page)
        assert [runs[i].id for i in reversed(range(len(runs)))] == whole[::-1]
        assert [r.id for r in api.runs(PROJECT, order=order, per_page=per_page)] == whole


def test_filters_select_through_the_api(api: wandb.Api) -> None:
    def ids(filters: dict[str, Any]) -> list[str]:
        return [r.id for r in api.runs(f"e/{PROJECT}", filters=filters)]

    assert ids({"state": "crashed"}) == ["r4"]
    assert ids({"state": {"$in": ["failed", "crashed"]}}) == ["r3", "r4"]
    assert ids({"config.optimizer.name": "adam"}) == ["r1"]
    assert ids({"summary_metrics.val_loss": {"$lt": 0.3}}) == ["r1", "r2"]
    assert ids({"summary_metrics.val_loss": "NaN"}) == ["r4"]
    assert ids({"tags": {"$all": ["baseline", "big"]}}) == ["r2"]
    assert ids({"group": None}) == ["r3", "r4"]
    assert ids({"$or": [{"display_name": {"$regex": "^g"}}, {"jobType": "eval"}]}) == ["r3", "r4"]
    assert ids({"name": "r2"}) == ["r2"]
    assert ids({"createdAt": {"$gt": "2000-01-01"}}) == ["r1", "r2", "r3", "r4"]
    assert ids({"display_name": "x' OR 1=1 --"}) == []
    with pytest.raises(WandbFilterError, match=r"'\$size'"):
        api.runs(PROJECT, filters={"config.lr": {"$size": 1}})
    with pytest.raises(WandbFilterError, match="'heartbeat_at'"):
        api.runs(PROJECT, order="heartbeat_at")


def test_run_paths_and_attributes(api: wandb.Api) -> None:
    for path in ["my-team/wapi/r1", "wapi/r1", "my-team/wapi/runs/r1", "wapi:r1", "r1", "/r1/"]:
        assert api.run(path).id == "r1", path
    run = api.run("my-team/wapi/r1")
    assert (run.name, run.display_name, run.state, run.project) == (
        "alpha",
        "alpha",
        "finished",
        PROJECT,
    )
    assert (run.entity, run.path, run.url) == ("my-team", ["my-team", PROJECT, "r1"], None)
    assert (run.tags, run.group, run.job_type, run.notes) == (["baseline"], "g", "train", "first")
    assert run.config == RUNS["r1"]["config"]
    assert run.lastHistoryStep == 9
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", run.created_at or "")
    assert run.created_at <= (run.heartbeat_at or "")
    summary = run.summary
    assert summary["val_loss"] == 0.2 and summary.val_loss == 0.2
    assert summary["train_loss"] == train_loss(9)
    assert summary["_step"] == 9
    assert 0 <= summary["_runtime"] < 600
    assert abs(summary["_timestamp"] - time.time()) < 3600
    assert summary._json_dict == dict(summary) == run.summary_metrics
    assert copy.deepcopy(summary) == summary and pickle.loads(pickle.dumps(summary)) == summary
    assert "run" in repr(run).lower() and "r1" in repr(run)

    gamma = api.run("wapi/r3")
    assert (gamma.state, gamma.group, gamma.job_type, gamma.notes, gamma.tags) == (
        "failed", None, None, None, [],
    )  # fmt: skip
    assert math.isnan(api.run("r4").summary["val_loss"])
    assert api.run("r4").state == "crashed"
    assert wandb.Api(overrides={"project": PROJECT}).run("r2").id == "r2"

    for missing in ["wapi/nope", "other/r1", "x' OR 1=1 --"]:
        with pytest.raises(RunNotFoundError):
            api.run(missing)


def test_history_rows_keys_samples_and_x_axis(api: wandb.Api) -> None:
    run = api.run("wapi/r1")
    rows = run.history(pandas=False)
    assert len(rows) == 10
    assert set(rows[0]) == {"_step", "_runtime", "_timestamp", "train_loss"}
    assert rows[4]["val_loss"] == 0.5 and rows[4]["train_loss"] == train_loss(4)
    assert all(r["_runtime"] >= 0 for r in rows)
    # With keys: x_axis and the keys, at the steps where all of them were logged.
    assert run.history(keys=["val_loss"], pandas=False) == [
        {"_step": 4, "val_loss": 0.5},
        {"_step": 9, "val_loss": 0.2},
    ]
    both = run.history(keys=["val_loss", "train_loss"], pandas=False)
    assert [r["_step"] for r in both] == [4, 9]
    by_loss = run.history(keys=["val_loss"], x_axis="train_loss", pandas=False)
    assert by_loss == [
        {"train_loss": train_loss(4), "val_loss": 0.5},
        {"train_loss": train_loss(9), "val_loss": 0.2},
    ]
    timed = run.history(keys=["val_loss"], x_axis="_runtime", pandas=False)
    assert [set(r) for r in timed] == [{"_runtime", "val_loss"}] * 2
    # samples: evenly spaced rows, the first and the last included.
    beta = api.run("wapi/r2")
    assert [r["_step"] for r in beta.history(samples=3, keys=["train_loss"], pandas=False)] == [
        0, 10, 19,
    ]  # fmt: skip
    for samples in (1, 2, 5, 7, 19, 20, 21):
        steps = [r["_step"] for r in beta.history(samples=samples, pandas=False)]
        assert len(steps) == min(samples, 20) and steps == sorted(set(steps)), samples
        assert steps[0] == 0 and (samples == 1 or steps[-1] == 19), samples
    assert len(beta.history(samples=500, pandas=False)) == 20
    frame = beta.history(keys=["val_loss"])
    assert list(frame.columns) == ["_step", "val_loss"] and list(frame["_step"]) == [9, 19]
    assert run.history(keys=["nope"], pandas=False) == []
    with pytest.raises(TypeError):
        run.history(keys="val_loss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="system"):
        run.history(stream="system")


def test_scan_history_pages_and_bounds(api: wandb.Api) -> None:
    beta = api.run("wapi/r2")
    everything = list(beta.scan_history())
    assert [r["_step"] for r in everything] == list(range(20))
    assert everything[9]["val_loss"] == 0.4
    part = list(beta.scan_history(keys=["train_loss"], page_size=3, min_step=2, max_step=7))
    assert part == [{"_step": s, "train_loss": train_loss(s)} for s in range(2, 7)]  # max excl.
    assert [r["_step"] for r in beta.scan_history(keys=["val_loss"], page_size=1)] == [9, 19]
    assert list(beta.scan_history(min_step=100)) == []


def test_histories_of_runs(api: wandb.Api) -> None:
    runs = api.runs(PROJECT, filters={"state": "finished"})
    rows = runs.histories(keys=["val_loss"])
    assert [(r["run_id"], r["_step"]) for r in rows] == [
        ("r1", 4),
        ("r1", 9),
        ("r2", 9),
        ("r2", 19),
    ]
    frame = runs.histories(keys=["val_loss"], format="pandas")
    assert list(frame.columns) == ["_step", "run_id", "val_loss"] and len(frame) == 4


def test_import_wandb_after_install_reads_runs(env: Settings) -> None:
    wandb.install()
    try:
        import wandb as installed
        from wandb.apis.public import Api

        assert installed.Api is Api is wandb.Api
        assert len(installed.Api().runs(PROJECT)) == 4
    finally:
        wandb.uninstall()


REAL_SIGNATURES = """
import inspect, json
import wandb.apis.public as public
methods = {"Api.__init__": public.Api.__init__, "Api.runs": public.Api.runs,
           "Api.run": public.Api.run, "Run.history": public.Run.history,
           "Run.scan_history": public.Run.scan_history, "Runs.histories": public.Runs.histories}
def arguments(m):
    return [[p.name, repr(p.default)] for p in inspect.signature(m).parameters.values()]
print(json.dumps({name: arguments(m) for name, m in methods.items()}))
"""


def test_signatures_are_wandbs() -> None:
    """Names, order and defaults of the arguments are the real wandb's: those recorded from wandb
    0.31.0 in tests/data/wandb_public_api_signatures.json (the test environment does not install
    wandb), and, where the real wandb is installed (`make bench` installs it), the record is
    checked against it, read in a process of its own so that this one never imports it."""
    import importlib.util
    import json
    import subprocess
    import sys
    from pathlib import Path

    record = json.loads(
        (Path(__file__).parent / "data" / "wandb_public_api_signatures.json").read_text()
    )
    theirs = record["signatures"]
    ours = {
        "Api.__init__": wandb.Api.__init__,
        "Api.runs": wandb.Api.runs,
        "Api.run": wandb.Api.run,
        "Run.history": wandb.public.Run.history,
        "Run.scan_history": wandb.public.Run.scan_history,
        "Runs.histories": wandb.public.Runs.histories,
    }
    assert set(ours) == set(theirs)
    for name, method in ours.items():
        got = [[p.name, repr(p.default)] for p in inspect.signature(method).parameters.values()]
        assert got[: len(theirs[name])] == theirs[name], name

    if importlib.util.find_spec("wandb") is None or sys.modules.get("wandb") is wandb:
        return  # no real wandb here: the record is what we check against
    done = subprocess.run(
        [sys.executable, "-c", REAL_SIGNATURES],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-300:]
    installed = json.loads(done.stdout.strip().splitlines()[-1])
    version = subprocess.run(
        [sys.executable, "-c", "import wandb; print(wandb.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if version == record["wandb"]:
        assert installed == theirs


def test_a_point_logged_twice_at_a_step_reads_as_the_later_one(settings: Settings) -> None:
    import runstream
    from tests.helpers import sink_until

    run = runstream.init(settings=settings, id="twice", project="dup")
    run.log({"x": 1.0, "y": 5.0}, step=3)
    run.log({"x": 2.0}, step=3)
    run.log({"x": 3.0}, step=4)
    assert run.finish().ok
    sink_until(settings, lambda c: c.command("SELECT count() FROM metrics") == 4)
    api = wandb.Api(settings=settings)
    one = api.run("dup/twice")
    assert one.history(pandas=False, keys=["x"]) == [{"_step": 3, "x": 2.0}, {"_step": 4, "x": 3.0}]
    assert [(r["_step"], r["x"], r.get("y")) for r in one.scan_history()] == [
        (3, 2.0, 5.0),
        (4, 3.0, None),
    ]


# Odd runs: metrics named like wandb's system keys or like runstream's x columns, a project
# with a '/' in its name, a project of exactly 3 runs, runs of one point and of none.

EVIL_STEPS = 5


@pytest.fixture(scope="module")
def odd(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    import runstream
    from tests.helpers import sink_until

    settings = isolated_settings(
        services, prefix="wo", dir=tmp_path_factory.mktemp("spool"), finish_timeout=30.0
    )
    evil = runstream.init(settings=settings, id="e1", project="evil")
    for s in range(EVIL_STEPS):
        evil.log(
            {"step": s * 10, "time": 5.0, "_step": 7, "_runtime": 99.0, "_timestamp": 1.0,
             "loss": 1.0 / (s + 1)},
            step=s,
        )  # fmt: skip
    assert evil.finish().ok
    one = runstream.init(settings=settings, id="one", project="evil")
    one.log({"loss": 0.5})
    assert one.finish().ok
    assert runstream.init(settings=settings, id="none", project="evil").finish().ok
    slash = runstream.init(settings=settings, id="s1", project="fresh/slash")
    slash.log({"loss": 0.25})
    assert slash.finish().ok
    for i, loss in enumerate([0.3, 0.1, 0.2]):
        run = runstream.init(settings=settings, id=f"p{i}", project="pp", config={"i": i})
        run.log({"loss": loss})
        assert run.finish().ok
        time.sleep(0.01)  # created_at strictly in order

    def landed(client: Any) -> bool:
        finished = client.command("SELECT count() FROM runs_current WHERE status != 'running'")
        points = client.command("SELECT count() FROM metrics")
        return bool(finished == 7 and points == EVIL_STEPS * 6 + 1 + 1 + 3)

    sink_until(settings, landed)
    return settings


@pytest.fixture
def odd_api(odd: Settings) -> wandb.Api:
    return wandb.Api(settings=odd)


def test_metrics_named_like_wandbs_system_keys_do_not_replace_them(odd_api: wandb.Api) -> None:
    """wandb drops a logged ``_step`` and sets ``_runtime`` itself; runstream's wandb.Api gives
    all three system keys from runstream's step and times, whatever the run logged."""
    run = odd_api.run("evil/e1")
    summary = run.summary
    assert summary["_step"] == EVIL_STEPS - 1 == run.lastHistoryStep
    assert abs(summary["_timestamp"] - time.time()) < 3600
    assert 0 <= summary["_runtime"] < 99
    assert (summary["step"], summary["time"]) == ((EVIL_STEPS - 1) * 10, 5.0)

    rows = run.history(pandas=False)
    assert [r["_step"] for r in rows] == list(range(EVIL_STEPS))
    assert all(r["_timestamp"] > 1e9 and 0 <= r["_runtime"] < 99 for r in rows)
    assert [(r["step"], r["time"]) for r in rows] == [(s * 10, 5.0) for s in range(EVIL_STEPS)]
    assert set(rows[0]) == {"_step", "_runtime", "_timestamp", "step", "time", "loss"}
    frame = run.history()
    assert list(frame["_step"]) == list(range(EVIL_STEPS)) and frame.columns.is_unique

    # keys of system keys only: every step (before: an empty frame).
    assert run.history(keys=["_step"], pandas=False) == [{"_step": s} for s in range(EVIL_STEPS)]
    assert list(run.history(keys=["_step"])["_step"]) == list(range(EVIL_STEPS))
    timed = run.history(keys=["_timestamp", "_runtime"], pandas=False)
    assert [r["_step"] for r in timed] == list(range(EVIL_STEPS))
    assert all(r["_timestamp"] > 1e9 and r["_runtime"] < 99 for r in timed)
    # Metrics named step and time are metrics like any other.
    assert run.history(keys=["step"], pandas=False) == [
        {"_step": s, "step": s * 10} for s in range(EVIL_STEPS)
    ]
    assert run.history(keys=["time"], x_axis="step", pandas=False) == [
        {"step": s * 10, "time": 5.0} for s in range(EVIL_STEPS)
    ]
    assert run.history(keys=["step"], samples=2, pandas=False) == [
        {"_step": 0, "step": 0},
        {"_step": EVIL_STEPS - 1, "step": (EVIL_STEPS - 1) * 10},
    ]
    assert list(run.scan_history(keys=["step", "time"], page_size=2)) == [
        {"_step": s, "step": s * 10, "time": 5.0} for s in range(EVIL_STEPS)
    ]
    assert list(run.scan_history(keys=["_step"])) == [{"_step": s} for s in range(EVIL_STEPS)]
    assert [r["_step"] for r in run.scan_history()] == list(range(EVIL_STEPS))


def test_a_project_with_a_slash_in_its_name(odd_api: wandb.Api, odd: Settings) -> None:
    """wandb project names cannot contain '/': a path is entity/project/run_id, and the error
    says how to read a run of such a runstream project."""
    import runstream

    with pytest.raises(RunNotFoundError) as info:
        odd_api.run("fresh/slash/s1")  # entity 'fresh', project 'slash'
    assert "cannot contain '/'" in str(info.value)
    assert "runstream.Api().run('s1', project='fresh/slash')" in str(info.value)
    with pytest.raises(ValueError, match=r"cannot contain '/'.*runstream.Api\(\).run\('s1'"):
        odd_api.run("team/fresh/slash/s1")
    with pytest.raises(ValueError, match="cannot contain '/'"):
        odd_api.runs("team/fresh/slash")
    # The ways that work: the project as an override, or runstream.Api.
    slashed = wandb.Api(overrides={"project": "fresh/slash"}, settings=odd)
    assert slashed.run("s1").project == "fresh/slash"
    assert [r.id for r in slashed.runs()] == ["s1"]
    assert runstream.Api(settings=odd).run("s1", project="fresh/slash").id == "s1"
    # A run looked for in the wrong project: the error names the project it is in.
    with pytest.raises(RunNotFoundError, match=r"is in project 'evil': api.run\('evil/e1'\)"):
        odd_api.run("other/e1")


@pytest.mark.parametrize("order", ["+created_at", "-created_at", "-summary_metrics.loss"])
def test_runs_of_an_empty_project_and_of_exactly_per_page_runs(
    odd_api: wandb.Api, order: str
) -> None:
    empty = odd_api.runs("nothing-here", order=order, per_page=3)
    assert (list(empty), len(empty), empty[:], empty[-3:]) == ([], 0, [], [])
    for index in (0, -1):
        with pytest.raises(IndexError):
            empty[index]

    expected = {
        "+created_at": ["p0", "p1", "p2"],
        "-created_at": ["p2", "p1", "p0"],
        "-summary_metrics.loss": ["p0", "p2", "p1"],
    }[order]
    for per_page in (1, 2, 3, 4):
        runs = odd_api.runs("pp", order=order, per_page=per_page)
        assert [r.id for r in runs] == expected, per_page
        assert len(runs) == 3 and [runs[i].id for i in range(-3, 3)] == expected * 2
        assert [r.id for r in runs[1:]] == expected[1:]
        for index in (3, -4):
            with pytest.raises(IndexError):
                runs[index]


def test_history_of_a_run_of_one_point_and_of_none(odd_api: wandb.Api) -> None:
    one = odd_api.run("evil/one")
    for samples in (1, 2, 3, 500):
        rows = one.history(samples=samples, pandas=False)
        assert [(r["_step"], r["loss"]) for r in rows] == [(0, 0.5)], samples
        assert one.history(keys=["loss"], samples=samples, pandas=False) == [
            {"_step": 0, "loss": 0.5}
        ]
        assert len(one.history(samples=samples)) == 1
    assert [r["loss"] for r in one.scan_history()] == [0.5]

    none = odd_api.run("evil/none")
    assert none.history(samples=1, pandas=False) == []
    assert none.history(keys=["loss"], pandas=False) == []
    assert len(none.history()) == 0
    assert list(none.scan_history()) == []
    assert none.summary["_step"] == 0


def test_arguments_of_the_wrong_type_are_refused_clearly(api: wandb.Api) -> None:
    with pytest.raises(WandbFilterError, match="filters must be a dict"):
        api.runs(PROJECT, filters="state=finished")  # type: ignore[arg-type]
    with pytest.raises(WandbFilterError, match=r"\$not is not a top-level operator"):
        api.runs(PROJECT, filters={"$not": {"state": "finished"}})
    with pytest.raises(WandbFilterError, match="order is a string"):
        api.runs(PROJECT, order=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="per_page is a whole number"):
        api.runs(PROJECT, per_page="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="per_page must be at least 1"):
        api.runs(PROJECT, per_page=0)
    run = api.run("wapi/r1")
    for samples in (2.5, True, "3", None):
        with pytest.raises(TypeError, match="samples is a whole number"):
            run.history(samples=samples)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="samples must be at least 1"):
        run.history(samples=0)
    with pytest.raises(TypeError, match="x_axis"):
        run.history(x_axis=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="page_size"):
        list(run.scan_history(page_size=1.5))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="min_step"):
        list(run.scan_history(min_step="0"))  # type: ignore[arg-type]
