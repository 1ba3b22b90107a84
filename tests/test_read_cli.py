"""The read side's terminal commands against the real ClickHouse: ``runstream export`` (Parquet
and CSV read back equal to what ClickHouse holds) and, in test_read_cli_runs.py and
test_read_cli_tail.py, ``runs ls/show`` and ``tail`` (issue 12, "CLI")."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import runstream
from runstream import cli
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from tests.conftest import Services, isolated_settings
from tests.helpers import scalar, sink_until

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

STEPS = 300


@pytest.fixture(scope="module")
def seeded(services: Services, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Project ``exp``: run A (lr 0.1, finished), run B (lr 0.01, failed); project ``other``: one
    run. Metrics through the SDK and the sink; system metrics inserted into their table."""
    settings = isolated_settings(
        services, prefix="rc", dir=tmp_path_factory.mktemp("spool"), finish_timeout=30.0
    )
    sdk = settings.with_overrides(system_metrics_interval=0, heartbeat_interval=3600)
    ids = {}
    for name, project, lr, status in (
        ("a", "exp", 0.1, "finished"),
        ("b", "exp", 0.01, "failed"),
        ("c", "other", 0.5, "finished"),
    ):
        run = runstream.init(project=project, name=name, config={"lr": lr}, settings=sdk)
        for step in range(STEPS):
            run.log({"loss": lr / (step + 1), "acc": step / STEPS, "odd": math.nan}, step=step)
        result = run.finish(exit_code=1 if status == "failed" else 0)
        assert result.ok, result
        ids[name] = run.id
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: (
            scalar(settings, f"SELECT count() FROM {db}.runs_current WHERE status != 'running'")
            == 3
        ),
    )
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == 3 * 3 * STEPS
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    connect(settings).insert(
        "system_metrics",
        [["exp", ids["a"], "gpu.0.util", at, 87.5, 1], ["exp", ids["b"], "cpu", at, 12.0, 1]],
        column_names=["project", "run_id", "name", "ts", "value", "seq"],
    )
    return {"settings": settings, "ids": ids}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("RUNSTREAM_")]:
        monkeypatch.delenv(key)


def export(seeded: dict[str, Any], *args: str) -> int:
    settings: Settings = seeded["settings"]
    return cli.main(
        ["export", "--clickhouse", settings.clickhouse_url, "--database",
         settings.clickhouse_database, *args]
    )  # fmt: skip


def clickhouse(seeded: dict[str, Any], sql: str, **params: Any) -> list[tuple[Any, ...]]:
    result = connect(seeded["settings"]).query(sql, parameters=params)
    return [tuple(r) for r in result.result_rows]


def parquet_rows(path: Path, columns: list[str]) -> list[tuple[Any, ...]]:
    table = pq.read_table(path)
    assert table.column_names == columns
    data = [table.column(c).to_pylist() for c in columns]
    return list(zip(*data, strict=True))


def same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Equal rows, NaN equal to NaN."""

    def norm(v: Any) -> Any:
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return [tuple(map(norm, r)) for r in a] == [tuple(map(norm, r)) for r in b]


def test_parquet_export_reads_back_equal_to_clickhouse(
    seeded: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x"
    assert export(seeded, "--project", "exp", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "export.json", "metrics.parquet", "runs.parquet", "system_metrics.parquet",
    ]  # fmt: skip
    assert f"{out / 'metrics.parquet'}\t{2 * 3 * STEPS} rows" in printed
    cols = ["project", "run_id", "name", "step", "ts", "value"]
    held = clickhouse(
        seeded, f"SELECT {', '.join(cols)} FROM metrics WHERE project = 'exp' "
        "ORDER BY project, run_id, name, step",
    )  # fmt: skip
    got = parquet_rows(out / "metrics.parquet", cols)
    assert len(got) == 2 * 3 * STEPS
    # Parquet timestamps come back as aware datetimes; ClickHouse's as naive UTC.
    got = [(*r[:4], r[4].replace(tzinfo=None), r[5]) for r in got]
    held = [(*r[:4], r[4].replace(tzinfo=None), r[5]) for r in held]
    assert same(got, held)
    runs = pq.read_table(out / "runs.parquet").to_pylist()
    assert sorted((r["name"], r["status"], r["config"]) for r in runs) == [
        ("a", "finished", '{"lr":0.1}'), ("b", "failed", '{"lr":0.01}'),
    ]  # fmt: skip
    system = parquet_rows(
        out / "system_metrics.parquet", ["project", "run_id", "name", "ts", "value"]
    )
    assert sorted((r[2], r[4]) for r in system) == [("cpu", 12.0), ("gpu.0.util", 87.5)]


def test_where_and_run_pick_runs(seeded: dict[str, Any], tmp_path: Path) -> None:
    ids = seeded["ids"]
    assert export(seeded, "--project", "exp", "--where", "config.lr > 0.05", "--out",
                  str(tmp_path / "w")) == 0  # fmt: skip
    assert set(pq.read_table(tmp_path / "w" / "metrics.parquet").column("run_id").to_pylist()) == {
        ids["a"]
    }
    assert export(seeded, "--project", "exp", "--run", ids["b"], "--tables", "runs", "--out",
                  str(tmp_path / "r")) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["export.json", "runs.parquet"]
    assert pq.read_table(tmp_path / "r" / "runs.parquet").column("run_id").to_pylist() == [ids["b"]]


def test_csv_export(seeded: dict[str, Any], tmp_path: Path) -> None:
    ids = seeded["ids"]
    assert export(seeded, "--project", "other", "--format", "csv", "--out", str(tmp_path)) == 0
    with (tmp_path / "metrics.csv").open(newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 3 * STEPS
    assert list(records[0]) == ["project", "run_id", "name", "step", "ts", "value"]
    first = records[0]
    assert (first["project"], first["run_id"], first["name"], first["step"]) == (
        "other", ids["c"], "acc", "0",
    )  # fmt: skip
    loss = [r for r in records if r["name"] == "loss"]
    assert [float(r["value"]) for r in loss[:3]] == [0.5, 0.25, 0.5 / 3]
    assert {r["value"] for r in records if r["name"] == "odd"} == {"nan"}


def test_existing_files_bad_filters_and_nothing_to_export(
    seeded: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(seeded, "--project", "other", "--out", str(tmp_path)) == 0
    before = (tmp_path / "metrics.parquet").stat().st_mtime_ns
    capsys.readouterr()
    assert export(seeded, "--project", "other", "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "metrics.parquet" in err and "--force" in err
    assert (tmp_path / "metrics.parquet").stat().st_mtime_ns == before
    assert export(seeded, "--project", "other", "--out", str(tmp_path), "--force") == 0
    capsys.readouterr()
    assert export(seeded, "--project", "exp", "--where", "config.lr >", "--out",
                  str(tmp_path / "bad")) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "bad --where" in err and "^" in err
    assert not (tmp_path / "bad").exists()
    assert (
        export(seeded, "--project", "other", "--tables", "runs,bogus", "--out", str(tmp_path)) == 2
    )
    assert "unknown --tables bogus" in capsys.readouterr().err
    assert export(seeded, "--project", "nope", "--out", str(tmp_path / "none")) == 1
    assert "no runs match" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*partial"))


def test_export_lifts_max_result_rows_for_itself_only(
    seeded: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("RUNSTREAM_READ_MAX_RESULT_ROWS", "10")
    assert export(seeded, "--project", "exp", "--tables", "metrics", "--out", str(tmp_path)) == 0
    assert pq.read_metadata(tmp_path / "metrics.parquet").num_rows == 2 * 3 * STEPS


@pytest.mark.parametrize("fmt", ["Parquet", "CSVWithNames"])
def test_a_query_failing_half_way_leaves_no_file(
    seeded: dict[str, Any], tmp_path: Path, fmt: str
) -> None:
    from runstream.errors import QueryError
    from runstream.read import Reader
    from runstream.read.cli.export import _write

    sql = "SELECT number, throwIf(number = 3000000, 'boom') FROM numbers(5000000)"
    with Reader(seeded["settings"]) as reader, pytest.raises(QueryError):
        _write(reader.raw_stream(sql, fmt=fmt), tmp_path / "x", lambda chunk: None)
    assert list(tmp_path.iterdir()) == []


# --- runs ls / runs show (through runstream.Api) ------------------------------------------------
def runs_cmd(
    seeded: dict[str, Any], capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    settings: Settings = seeded["settings"]
    code = cli.main(
        ["runs", args[0], "--clickhouse", settings.clickhouse_url, "--database",
         settings.clickhouse_database, *args[1:]]
    )  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_ls(seeded: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    ids = seeded["ids"]
    code, out, err = runs_cmd(seeded, capsys, "ls", "--project", "exp")
    assert (code, err) == (0, "")
    records = list(csv.DictReader(out.splitlines()))  # piped: csv
    assert list(records[0]) == ["id", "name", "status", "started_at", "runtime", "last_step"]
    assert [(r["id"], r["name"], r["status"], r["last_step"]) for r in records] == [
        (ids["b"], "b", "failed", str(STEPS - 1)),
        (ids["a"], "a", "finished", str(STEPS - 1)),
    ]  # fmt: skip newest first
    assert all(float(r["runtime"]) >= 0 for r in records)
    code, out, _ = runs_cmd(
        seeded, capsys, "ls", "--where", "config.lr > 0.05", "--sort=-config.lr",
        "--columns", "id,project,config.lr,summary.loss", "--format", "json",
    )  # fmt: skip
    assert code == 0
    got = json.loads(out)
    assert [(r["id"], r["project"], r["config.lr"]) for r in got] == [
        (ids["c"], "other", 0.5), (ids["a"], "exp", 0.1),
    ]  # fmt: skip
    assert got[0]["summary.loss"] == pytest.approx(0.5 / STEPS)
    code, out, _ = runs_cmd(seeded, capsys, "ls", "--limit", "1", "--format", "table")
    assert code == 0 and out.splitlines()[-1].startswith("(1 of 3 runs")
    assert [c.strip() for c in out.splitlines()[0].split(" | ")][:3] == ["id", "project", "name"]


def test_runs_ls_refuses_bad_input(
    seeded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = runs_cmd(seeded, capsys, "ls", "--where", "config.lr >> 1")
    assert (code, out) == (2, "") and "^" in err
    code, out, err = runs_cmd(seeded, capsys, "ls", "--sort", "bogus")
    assert (code, out) == (2, "") and err.startswith("runstream runs ls: --sort: unknown name")
    code, _, err = runs_cmd(seeded, capsys, "ls", "--columns", "id,bogus")
    assert code == 2 and "bogus" in err and "config.KEY" in err
    code, out, err = runs_cmd(seeded, capsys, "ls", "--project", "nope")
    assert (code, out) == (0, "id,name,status,started_at,runtime,last_step\n")


def test_runs_show(seeded: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    ids = seeded["ids"]
    code, out, err = runs_cmd(seeded, capsys, "show", ids["a"])
    assert (code, err) == (0, "")
    report = json.loads(out)  # piped: json
    assert report["run"]["status"] == "finished" and report["run"]["exit_code"] == 0
    assert report["run"]["last_step"] == STEPS - 1 and report["config"] == {"lr": 0.1}
    metrics = {m["name"]: m for m in report["metrics"]}
    assert sorted(metrics) == ["acc", "loss", "odd"]
    loss, acc = metrics["loss"]["sparkline"], metrics["acc"]["sparkline"]
    assert len(loss) == len(acc) == 30
    assert (loss[0], loss[-1], acc[0], acc[-1]) == ("█", "▁", "▁", "█")
    assert metrics["loss"]["max"] == 0.1 and metrics["loss"]["min"] == pytest.approx(0.1 / STEPS)
    assert metrics["odd"]["sparkline"].strip() == ""
    assert report["last_events"][-1]["type"] == "run_finished"
    code, out, err = runs_cmd(seeded, capsys, "show", ids["b"], "--format", "table")
    assert code == 0
    for section in ("run:", "config:", "summary:", "metrics:", "last events:"):
        assert section in out.splitlines()
    assert "failed" in out and re.search(r"^lr +\| 0.01$", out, re.M)
    code, out, err = runs_cmd(seeded, capsys, "show", "no-such-run")
    assert (code, out) == (1, "") and "no-such-run" in err


def test_export_memory_stays_flat(seeded: dict[str, Any], tmp_path: Path) -> None:
    """2M points as ~100 MB of CSV, exported by a subprocess whose peak RSS stays far below the
    file's size above the interpreter's own (the chunks go straight to disk)."""
    import subprocess
    import sys

    settings: Settings = seeded["settings"]
    run_id = seeded["ids"]["c"]
    points = 2_000_000
    connect(settings).command(
        "INSERT INTO metrics (project, run_id, name, step, ts, value, seq) "
        f"SELECT 'other', '{run_id}', 'big', number + 1000, now64(6), number / 7, number "
        f"FROM numbers({points})"
    )
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        # The child reports its own peak, VmHWM of its address space. Not getrusage: Linux keeps
        # ru_maxrss across fork and exec, so it would include this pytest process's size (and
        # RUSAGE_CHILDREN here is the largest child ever waited for, a ClickHouse server).
        own_peak = (
            "import re, sys\nfrom runstream.cli import main\ncode = main(sys.argv[1:])\n"
            "status = open('/proc/self/status').read()\n"
            "print('peak-kib', re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n"
            "sys.exit(code)"
        )
        done = subprocess.run(
            [sys.executable, "-c", own_peak, "export", "--clickhouse", settings.clickhouse_url,
             "--database", settings.clickhouse_database, "--project", "other", "--format",
             "csv", "--tables", "metrics", "--out", str(tmp_path)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        size = (tmp_path / "metrics.csv").stat().st_size
        assert size > 80_000_000
        peak_kib = int(re.findall(r"^peak-kib (\d+)$", done.stderr, re.M)[-1])
        # About 55 MB here whatever the size (interpreter, clickhouse-connect, 1 MB chunks).
        assert peak_kib * 1024 < 0.75 * size, f"peak RSS {peak_kib} KiB for a {size} byte file"
    finally:
        connect(settings).command(
            "ALTER TABLE metrics DELETE WHERE name = 'big' SETTINGS mutations_sync = 1"
        )


def show_cmd(
    settings: Settings, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = cli.main(
        ["runs", args[0], "--clickhouse", settings.clickhouse_url, "--database",
         settings.clickhouse_database, *args[1:]]
    )  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def dupes(settings: Settings, tmp_path: Path) -> Settings:
    """Run ``dupe`` in projects ``team/vision`` (a '/' in its name) and ``other``; configs with
    a nested ``optimizer.lr`` and a top-level key ``"optimizer.lr"``."""
    sdk = settings.with_overrides(system_metrics_interval=0, heartbeat_interval=3600)
    for project, lr, dotted in (("team/vision", 0.1, 1), ("other", 0.2, 2)):
        run = runstream.init(
            project=project, id="dupe", settings=sdk, dir=tmp_path / project.replace("/", "_"),
            config={"optimizer": {"lr": lr}, "optimizer.lr": dotted, "a,b": 1},
        )  # fmt: skip
        run.log({"loss": lr}, step=0)
        assert run.finish().ok
    db = settings.clickhouse_database
    done = f"SELECT count() FROM {db}.runs_current WHERE status = 'finished'"
    sink_until(settings, lambda c: scalar(settings, done) == 2)
    return settings


def test_runs_show_picks_the_project(dupes: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """#2, #8, #11, #12 (issue 12): an id in two projects is refused, naming them and saying
    how to pick one; PROJECT/RUN_ID splits at the last '/'; --project; unknown ids; nested and
    dotted keys print apart."""
    code, out, err = show_cmd(dupes, capsys, "show", "dupe")
    assert (code, out) == (2, "")
    assert "several projects (other, team/vision)" in err
    assert "`runstream runs show other/dupe`" in err and "--project other" in err
    assert "api.run" not in err
    code, out, err = show_cmd(dupes, capsys, "show", "team/vision/dupe", "--format", "json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert (report["run"]["project"], report["config"]["optimizer"]) == ("team/vision", {"lr": 0.1})
    code, out, err = show_cmd(
        dupes, capsys, "show", "dupe", "--project", "other", "--format", "json"
    )
    assert (code, err) == (0, "") and json.loads(out)["run"]["project"] == "other"
    code, out, err = show_cmd(dupes, capsys, "show", "nope", "--project", "other")
    assert (code, out) == (1, "")
    assert err.startswith("runstream runs show: no run 'nope' in project 'other': list the runs")
    assert "runstream runs ls" in err
    code, out, err = show_cmd(dupes, capsys, "show", "other/dupe", "--format", "table")
    assert code == 0
    config = out.split("config:\n")[1].split("\n\n")[0].splitlines()[2:]
    assert [re.split(r" +\| ", line) for line in config] == [
        ["optimizer.lr", "0.2"], ['["optimizer.lr"]', "2"], ['["a,b"]', "1"],
    ]  # fmt: skip
    code, out, err = show_cmd(
        dupes, capsys, "ls", "--project", "other", "--format", "json",
        "--columns", 'id,config.optimizer.lr,config["optimizer"]["lr"],config["a,b"]',
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert json.loads(out) == [
        {"id": "dupe", "config.optimizer.lr": 2, 'config["optimizer"]["lr"]': 0.2,
         'config["a,b"]': 1},
    ]  # fmt: skip
    code, out, err = show_cmd(dupes, capsys, "ls", "--columns", "config[lr]")
    assert (code, out) == (2, "") and '["KEY"]' in err


@pytest.mark.parametrize(
    "args",
    [["runs", "ls", "--format", "table"], ["runs", "show", "other/dupe", "--format", "table"],
     ["runs", "show", "team/vision/dupe"], ["query", "SELECT number FROM numbers(100000)"]],
)  # fmt: skip
def test_a_closed_pipe_exits_quietly(dupes: Settings, args: list[str]) -> None:
    """#4: `runstream ... | head -1` with the reader gone: exit 0, nothing on stderr."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen(
        [sys.executable, "-m", "runstream", *args[:2], "--clickhouse", dupes.clickhouse_url,
         "--database", dupes.clickhouse_database, *args[2:]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert child.stdout is not None
    child.stdout.close()  # before the interpreter has even started: every write fails
    _, err = child.communicate(timeout=60)
    assert (child.returncode, err) == (0, "")


def test_force_replaces_the_whole_export(
    seeded: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#10: a folder never mixes two exports: --force removes the earlier export's files this
    one does not write; export.json says what the folder holds."""
    assert export(seeded, "--project", "exp", "--out", str(tmp_path)) == 0
    manifest = json.loads((tmp_path / "export.json").read_text())
    assert manifest["project"] == "exp" and manifest["format"] == "parquet"
    assert manifest["run_count"] == 2 and manifest["where"] is None
    assert {t: v["rows"] for t, v in manifest["tables"].items()} == {
        "metrics": 2 * 3 * STEPS, "runs": 2, "system_metrics": 2,
    }  # fmt: skip
    assert manifest["exported_at"].endswith("Z")
    capsys.readouterr()
    # another format or table set into the same folder: refused without --force
    args = ("--project", "other", "--tables", "metrics", "--format", "csv", "--out", str(tmp_path))
    assert export(seeded, *args) == 2
    err = capsys.readouterr().err
    assert "earlier export" in err and "runs.parquet" in err and "--force" in err
    assert export(seeded, *args, "--force") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "metrics.csv"]
    manifest = json.loads((tmp_path / "export.json").read_text())
    assert (manifest["project"], manifest["format"], list(manifest["tables"])) == (
        "other", "csv", ["metrics"],
    )  # fmt: skip
    assert manifest["tables"]["metrics"]["rows"] == 3 * STEPS


def test_bad_out_and_timeout_are_refused(
    seeded: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#4, #10: --out that cannot be created, --out "", --timeout 0: a message, no traceback."""
    assert export(seeded, "--project", "exp", "--out", "/proc/nope/x") == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("runstream export: cannot create --out /proc/nope/x") and "Trace" not in err
    )
    for bad in (["--out", ""], ["--out", str(tmp_path), "--timeout", "0"]):
        with pytest.raises(SystemExit) as exited:
            export(seeded, "--project", "exp", *bad)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "is empty" in err or "more than 0 seconds" in err
    assert list(tmp_path.iterdir()) == []


def test_csv_is_plain_for_other_tools(settings: Settings, tmp_path: Path) -> None:
    """#10: tags as JSON arrays, NULL as an empty field, times ISO 8601 with Z."""
    sdk = settings.with_overrides(system_metrics_interval=0, heartbeat_interval=3600)
    done = runstream.init(project="csv", id="done", tags=['t\'""', "ü"], settings=sdk)
    done.log({"x": 1.0}, step=0)
    assert done.finish().ok
    live = runstream.init(project="csv", id="live", settings=sdk)
    live.log({"x": 2.0}, step=0)
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.metrics") == 2)
    code = cli.main(
        ["export", "--clickhouse", settings.clickhouse_url, "--database", db, "--project", "csv",
         "--format", "csv", "--out", str(tmp_path)]
    )  # fmt: skip
    live.finish()
    assert code == 0
    with (tmp_path / "runs.csv").open(newline="") as f:
        runs = {r["run_id"]: r for r in csv.DictReader(f)}
    assert json.loads(runs["done"]["tags"]) == ['t\'""', "ü"]
    assert json.loads(runs["live"]["tags"]) == []
    assert runs["live"]["finished_at"] == "" and runs["live"]["exit_code"] == ""
    iso = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
    assert iso.fullmatch(runs["done"]["finished_at"]) and iso.fullmatch(runs["live"]["started_at"])
    with (tmp_path / "metrics.csv").open(newline="") as f:
        metrics = list(csv.DictReader(f))
    assert [(m["run_id"], m["value"]) for m in metrics] == [("done", "1"), ("live", "2")]
    assert all(iso.fullmatch(m["ts"]) for m in metrics)
