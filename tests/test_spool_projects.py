"""Two runs with the same run id in two projects, on one machine with one spool directory (a fresh
user's report: the second project's events started at seq 3, its run_started never arrived).
A run is (project, run_id) downstream; its spool folder, its seqs and its resume position are its
own. Real broker, real sink, real ClickHouse."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

import runstream
from runstream.cli import main
from runstream.producers.resume import find_position
from runstream.producers.spool import RunSpool, SpoolState, find_runs, runs_dir
from runstream.settings import Settings
from tests.conftest import free_port
from tests.helpers import records_of, rows, scalar, sink_until

pytestmark = pytest.mark.integration

PROJECTS = ("vision", "speech")


def landed(settings: Settings, count: int) -> list[dict[str, Any]]:
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= count)
    return records_of(
        settings,
        f"SELECT project, run_id, seq, type FROM {db}.events ORDER BY project, run_id, seq",
    )


def assert_whole(events: list[dict[str, Any]], project: str, count: int) -> None:
    """Every event of (project, dupe) once, numbered 0..count-1, starting with run_started."""
    mine = [e for e in events if e["project"] == project and e["run_id"] == "dupe"]
    assert [e["seq"] for e in mine] == list(range(count)), project
    assert mine[0]["type"] == "run_started" and mine[-1]["type"] == "run_finished", project


def assert_configs(settings: Settings, expected: dict[str, dict[str, Any]]) -> None:
    db = settings.clickhouse_database
    found = {
        r["project"]: (orjson.loads(r["config"]) if isinstance(r["config"], str) else r["config"])
        for r in records_of(
            settings, f"SELECT project, config FROM {db}.runs_current WHERE run_id = 'dupe'"
        )
    }
    assert found == expected


def test_one_after_the_other_each_run_lands_whole(settings: Settings) -> None:
    quiet = settings.with_overrides(system_metrics_interval=0)
    for index, project in enumerate(PROJECTS):
        run = runstream.init(settings=quiet, id="dupe", project=project, config={"lr": index})
        for step in range(5 + index):
            run.log({"loss": float(step)})
        assert run.finish().ok
    events = landed(settings, 7 + 8)
    assert_whole(events, "vision", 7)
    assert_whole(events, "speech", 8)
    assert_configs(settings, {"vision": {"lr": 0}, "speech": {"lr": 1}})
    paths, strays = find_runs(settings.dir)
    assert len(paths) == 2 and not strays
    # Resumed later, each from its own spool alone (ClickHouse unreachable): its own position.
    blind = quiet.with_overrides(clickhouse_url=f"http://127.0.0.1:{free_port()}")
    for project, steps in zip(PROJECTS, (5, 6), strict=True):
        again = runstream.init(settings=blind, id="dupe", project=project, resume="must")
        assert again.step == steps
        again.log({"loss": -1.0})
        assert again.finish().ok
    events = landed(settings, 15 + 6)
    for project, count in zip(PROJECTS, (10, 11), strict=True):
        mine = [e for e in events if e["project"] == project]
        assert [e["seq"] for e in mine] == list(range(count))
        assert [e["type"] for e in mine].count("run_started") == 1
        assert [e["type"] for e in mine][-3] == "run_resumed"


def test_at_the_same_time_in_one_process_each_run_lands_whole(settings: Settings) -> None:
    quiet = settings.with_overrides(system_metrics_interval=0)
    runs = [runstream.init(settings=quiet, id="dupe", project=p, config={"p": p}) for p in PROJECTS]
    for step in range(20):
        for run in runs:
            run.log({"loss": float(step)})
    assert all(run.finish().ok for run in runs)
    assert len(find_runs(settings.dir)[0]) == 2, "a spool folder each"
    events = landed(settings, 2 * 22)
    assert_whole(events, "vision", 22)
    assert_whole(events, "speech", 22)
    assert_configs(settings, {p: {"p": p} for p in PROJECTS})


CHILD = textwrap.dedent(
    """
    import sys, time
    import runstream
    from runstream.settings import Settings
    settings = Settings.model_validate_json(sys.argv[1])
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    project = sys.argv[2]
    run = runstream.init(settings=settings, id="dupe", project=project, config={"p": project})
    for step in range(30):
        run.log({"loss": float(step)})
    sys.exit(0 if run.finish().ok else 3)
    """
)


def test_at_the_same_time_in_two_processes_each_run_lands_whole(settings: Settings) -> None:
    import time

    quiet = settings.with_overrides(system_metrics_interval=0, heartbeat_interval=60)
    start = time.time() + 2.0  # both past their imports: they open the spool together
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, quiet.model_dump_json(), project, str(start)]
        )
        for project in PROJECTS
    ]
    assert [child.wait(60) for child in children] == [0, 0]
    assert len(find_runs(settings.dir)[0]) == 2, "a spool folder each"
    events = landed(settings, 2 * 32)
    assert_whole(events, "vision", 32)
    assert_whole(events, "speech", 32)
    assert_configs(settings, {p: {"p": p} for p in PROJECTS})


def test_offline_runs_open_at_once_sync_apart(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Offline, both open at once: each run's spool syncs whole. The first run's folder is
    the previous layout's ``runs/<run id>/`` (syncs as before), the second one's is its own."""
    from runstream.producers.spool import spool_path

    offline = settings.with_overrides(mode="offline", system_metrics_interval=0)
    runs = [
        runstream.init(settings=offline, id="dupe", project=p, config={"p": p}) for p in PROJECTS
    ]
    for step in range(3):
        for run in runs:
            run.log({"loss": float(step)})
    assert all(run.finish().ok for run in runs)
    assert spool_path(offline.dir, "vision", "dupe") == runs_dir(offline.dir) / "dupe"
    assert spool_path(offline.dir, "speech", "dupe") != runs_dir(offline.dir) / "dupe"
    args = ["sync", str(settings.dir), "--kafka", settings.kafka_bootstrap]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("5 of 5 events delivered") == 2, out
    assert "dupe (vision)" in out and "dupe (speech)" in out, out
    events = landed(settings, 10)
    assert_whole(events, "vision", 5)
    assert_whole(events, "speech", 5)
    assert_configs(settings, {p: {"p": p} for p in PROJECTS})
    assert main(args) == 0
    assert capsys.readouterr().out.count("nothing to deliver") == 2


def test_resume_finds_its_own_project_in_clickhouse(settings: Settings) -> None:
    """Resumed on another machine (empty spool): ClickHouse's position of the run's own project,
    never of a run with the same id in another one."""
    quiet = settings.with_overrides(system_metrics_interval=0)
    first = runstream.init(settings=quiet, id="dupe", project="vision")
    for step in range(9):
        first.log({"loss": float(step)})
    assert first.finish().ok
    landed(settings, 11)
    elsewhere = quiet.with_overrides(dir=settings.dir.parent / "elsewhere", project="speech")
    assert not find_position(elsewhere, "dupe").exists
    run = runstream.init(settings=elsewhere, id="dupe", resume="allow", config={"p": "speech"})
    assert run.step == 0
    assert run.finish().ok
    events = landed(settings, 13)
    assert_whole(events, "vision", 11)
    assert_whole(events, "speech", 2)


def test_a_folder_of_another_project_is_never_reused(settings: Settings) -> None:
    """The old layout's folder ``runs/dupe/`` holds another project's undelivered events: a new
    run of the same id elsewhere gets a folder of its own, and the old one is left whole."""
    root = settings.dir
    old = RunSpool.create_or_open(
        root, SpoolState(run_id="dupe", project="vision", topic="t", kafka_bootstrap="x")
    )
    old.append([(0, b'{"id":"a","type":"run_started","seq":0}')])
    old.mark(next_seq=1)
    old.save_state()
    old.close()
    new = RunSpool.create_or_open(
        root, SpoolState(run_id="dupe", project="speech", topic="t", kafka_bootstrap="x")
    )
    assert new.path != old.path and new.state.next_seq == 0 and new.state.acked_through == -1
    assert RunSpool.open_existing(old.path) is not None
    assert [s for s, _ in RunSpool.open_existing(old.path).read_from(0)] == [0]  # type: ignore[union-attr]


def test_both_runs_open_at_once_get_their_heartbeats(settings: Settings) -> None:
    """The SDK's worker keeps a channel per run: one per (project, run id), so the first of
    two runs of one id is still served (heartbeats, acknowledgements) while the second runs."""
    import time

    beating = settings.with_overrides(system_metrics_interval=0, heartbeat_interval=0.2)
    runs = [runstream.init(settings=beating, id="dupe", project=p) for p in PROJECTS]
    time.sleep(1.1)
    assert all(run.finish().ok for run in runs)
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: (
            scalar(
                settings, f"SELECT uniqExact(project) FROM {db}.events WHERE type = 'run_finished'"
            )
            == 2
        ),
    )
    beats = dict(
        rows(
            settings,
            f"SELECT project, countIf(type = 'heartbeat') FROM {db}.events GROUP BY project",
        )
    )
    assert beats["vision"] >= 3 and beats["speech"] >= 3, beats


def test_a_folder_without_a_readable_state_belongs_to_the_project_of_its_events(
    tmp_path: Path,
) -> None:
    """A damaged ``state.json``: the folder is the project's of its first intact event. A state
    of an SDK that did not record the project is anyone's (as before)."""
    from runstream.producers.spool import folder_project, spool_path

    root = tmp_path / "spool"
    legacy = RunSpool(
        runs_dir(root) / "dupe",
        SpoolState(run_id="dupe", project="vision", topic="t", kafka_bootstrap="x"),
    )
    legacy.append([(0, orjson.dumps({"id": "a", "seq": 0, "project": "vision"}))])
    legacy.close()
    (legacy.path / "state.json").write_bytes(b"{")
    assert folder_project(legacy.path) == "vision"
    assert spool_path(root, "vision", "dupe") == legacy.path
    assert spool_path(root, "speech", "dupe").name.startswith("dupe@speech-")

    (legacy.path / "state.json").write_bytes(
        orjson.dumps({"run_id": "dupe", "topic": "t", "next_seq": 1})
    )
    assert folder_project(legacy.path) is None
    assert spool_path(root, "speech", "dupe") == legacy.path


def _open_at(root: str, project: str, start: float) -> str:
    import time

    while time.time() < start:
        pass
    state = SpoolState(run_id="dupe", project=project, topic="t", kafka_bootstrap="x")
    spool = RunSpool.create_or_open(Path(root), state)
    spool.close()
    return str(spool.path)


def test_many_processes_opening_one_id_at_once_get_a_folder_each(tmp_path: Path) -> None:
    """The claim of a folder is exclusive: of runs of one id in many projects opened at the
    same instant, exactly one takes ``runs/dupe/``, each other one a folder of its own."""
    import multiprocessing
    import time

    projects = [f"p{i}" for i in range(6)]
    # spawn, not fork: a fork of this process (librdkafka's and other tests' threads) can
    # deadlock in the child. One pool for every attempt, warmed first, so the workers start
    # together at `start`.
    with multiprocessing.get_context("spawn").Pool(len(projects)) as pool:
        pool.starmap(time.sleep, [(0.0,)] * len(projects))
        for attempt in range(5):
            root = tmp_path / str(attempt)
            start = time.time() + 0.5
            paths = pool.starmap(_open_at, [(str(root), p, start) for p in projects])
            _check_one_folder_each(projects, paths)


def _check_one_folder_each(projects: list[str], paths: list[str]) -> None:
    from runstream.producers.spool import read_state

    assert len(set(paths)) == len(projects), paths
    assert sum(Path(p).name == "dupe" for p in paths) == 1
    for project, path in zip(projects, paths, strict=True):
        state = read_state(Path(path))
        assert state is not None and state.project == project
