"""The web UI's JSON endpoints (runstream/ui) against the real ClickHouse, through Starlette's
TestClient: shapes, paging and sorting done by ClickHouse, filters, the bucketed history that keeps
a spike, NaN and infinities, compare and grouping, the SQL console, read-only methods and the
optional token (issue 13, "Tests")."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.snapshots import refresh
from tests import ui_seed
from tests.conftest import Services, isolated_settings
from tests.helpers import scalar

pytestmark = pytest.mark.integration

starlette_testclient = pytest.importorskip("starlette.testclient")
BIG = 100_000  # points of the big run here (the browser test draws a million)
SPIKE = 65_432


@pytest.fixture(scope="module")
def seeded(services: Services) -> Iterator[Settings]:
    settings = isolated_settings(services, prefix="uh")
    ui_seed.seed(settings, big_points=BIG, spike_step=SPIKE)
    yield settings
    ui_seed.drop(settings)


@pytest.fixture(scope="module")
def client(seeded: Settings) -> Iterator[Any]:
    from runstream.ui import create_app

    with starlette_testclient.TestClient(create_app(seeded)) as c:
        yield c


def get(client: Any, path: str, status: int = 200, **params: Any) -> Any:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    return response.json()


def vision_runs() -> list[ui_seed.SeedRun]:
    return [r for r in ui_seed.seed_runs() if r.project == ui_seed.PROJECT]


def test_projects_count_runs_and_running(client: Any) -> None:
    body = get(client, "/api/projects")
    by_name = {p["project"]: p for p in body["projects"]}
    assert set(by_name) == {ui_seed.PROJECT, ui_seed.OTHER_PROJECT}
    assert by_name[ui_seed.PROJECT]["runs"] == len(vision_runs())
    assert by_name[ui_seed.PROJECT]["running"] == 1
    assert by_name[ui_seed.OTHER_PROJECT]["runs"] == 1
    assert by_name[ui_seed.PROJECT]["last_activity"].endswith("Z")


def test_runs_pages_cover_every_run_once_newest_first(client: Any) -> None:
    seen: list[str] = []
    for offset in range(0, 20, 4):
        page = get(client, "/api/runs", project=ui_seed.PROJECT, limit=4, offset=offset)
        assert page["total"] == len(vision_runs())
        assert page["offset"] == offset and page["limit"] == 4
        assert len(page["runs"]) == min(4, max(0, len(vision_runs()) - offset))
        seen += [r["id"] for r in page["runs"]]
    assert sorted(seen) == sorted(r.run_id for r in vision_runs())
    # Seeded an hour apart in list order: newest first is the reverse.
    assert seen == [r.run_id for r in reversed(vision_runs())]
    first = get(client, "/api/runs", project=ui_seed.PROJECT, limit=1)["runs"][0]
    assert set(first) >= {"id", "name", "status", "group", "tags", "config", "summary"}
    assert set(page["config_keys"]) <= {
        "lr",
        "batch_size",
        "optimizer.name",
        "optimizer.momentum",
        "seed",
        "model",
    }


def test_runs_filter_sort_and_a_bad_filter(client: Any) -> None:
    where = 'config.lr > 2e-3 and status == "finished"'
    page = get(client, "/api/runs", project=ui_seed.PROJECT, where=where, order_by="summary.loss")
    expected = {
        r.name for r in vision_runs() if float(r.config["lr"]) > 2e-3 and r.status == "finished"
    }
    assert page["total"] == len(expected) == len(page["runs"])
    assert {r["name"] for r in page["runs"]} == expected
    losses = [r["summary"]["loss"] for r in page["runs"]]
    assert losses == sorted(losses)
    # Several names, one in brackets (a comma inside quotes stays in the name).
    page = get(
        client,
        "/api/runs",
        project=ui_seed.PROJECT,
        where='"sweep" in tags',
        order_by='-summary["val/loss"],name',
    )
    keys = [(-r["summary"]["val/loss"], r["name"]) for r in page["runs"]]
    assert len(keys) == 8 and keys == sorted(keys)
    page = get(client, "/api/runs", project=ui_seed.PROJECT, where='"live" in tags')
    assert [r["id"] for r in page["runs"]] == [ui_seed.LIVE_RUN]
    assert page["runs"][0]["status"] == "running"
    bad = get(client, "/api/runs", 400, project=ui_seed.PROJECT, where="config.lr >")
    assert "config.lr" in bad["error"]
    # A filter that tries to be SQL selects nothing and changes nothing.
    page = get(client, "/api/runs", where='name == "\'; DROP TABLE events --"')
    assert page["total"] == 0


def test_runs_sort_by_last_step_and_last_event_at(client: Any) -> None:
    """The runs table's Step header sorts by ``last_step``: a name order_by takes, not a filter."""
    page = get(client, "/api/runs", project=ui_seed.PROJECT, order_by="-last_step", limit=50)
    steps = [r["last_step"] for r in page["runs"]]
    assert len(steps) == len(vision_runs()) and steps == sorted(steps, reverse=True)
    page = get(client, "/api/runs", project=ui_seed.PROJECT, order_by=" last_event_at", limit=50)
    assert page["total"] == len(vision_runs())
    bad = get(client, "/api/runs", 400, project=ui_seed.PROJECT, where="last_step > 3")
    assert "last_step" in bad["error"]


def test_run_page_has_config_metrics_and_alerts(client: Any) -> None:
    run = get(client, "/api/runs/r000abc")
    assert run["name"] == "resnet-adam-lr0.001-s0"
    assert run["config"]["optimizer"] == {"name": "adam", "momentum": 0.9}
    assert run["metrics"] == ["acc", "epoch", "loss", "lr", "val/loss"]
    assert run["status"] == "finished" and run["last_step"] == 1999
    assert get(client, f"/api/runs/{ui_seed.NAN_RUN}")["alerts"][0]["level"] == "ERROR"
    missing = get(client, "/api/runs/no-such-run", 404)
    assert "no-such-run" in missing["error"]
    assert "runs table" in missing["error"] and "runstream.Api" not in missing["error"]


def test_history_buckets_keep_the_spike_and_zoom_fetches_the_range(client: Any) -> None:
    body = get(client, f"/api/runs/{ui_seed.BIG_RUN}/history", key="loss", samples=500)
    points = body["points"]
    assert body["bucketed"] and len(points["x"]) == 500
    assert max(points["max"]) == ui_seed.SPIKE_VALUE
    assert sum(1 for v in points["max"] if v == ui_seed.SPIKE_VALUE) == 1
    assert all(v < 2 for v in points["y"])  # the spike is not a bucket's last value...
    assert max(points["min"]) < 2  # ...nor its minimum: only the max keeps it
    # The NaN inside a bucket of 200 points is listed for the chart to mark.
    assert points["nonfinite"] == {
        "x": [ui_seed.NAN_STEP * BIG // ui_seed.BIG_POINTS],
        "y": ["NaN"],
    }
    zoom = get(
        client,
        f"/api/runs/{ui_seed.BIG_RUN}/history",
        key="loss",
        samples=100,
        min_step=SPIKE - 1000,
        max_step=SPIKE + 1000,
    )["points"]
    assert all(SPIKE - 1000 <= x <= SPIKE + 1000 for x in zoom["x"])
    assert max(zoom["max"]) == ui_seed.SPIKE_VALUE and len(zoom["x"]) == 100
    assert zoom["nonfinite"] == {"x": [], "y": []}  # the NaN is outside the range
    bad = get(client, f"/api/runs/{ui_seed.BIG_RUN}/history", 400, key="loss", samples="many")
    assert "samples" in bad["error"]


def test_history_of_every_point_keeps_nan_and_infinity(client: Any) -> None:
    body = get(client, f"/api/runs/{ui_seed.NAN_RUN}/history", key="loss", samples=0)
    points = body["points"]
    assert not body["bucketed"]
    assert points["x"][-3:] == [300, 301, 302]
    assert points["y"][-3:] == ["NaN", "Infinity", 1.5]
    timed = get(client, f"/api/runs/{ui_seed.NAN_RUN}/history", key="loss", x="time", samples=0)
    xs = timed["points"]["x"]
    assert all(isinstance(v, float) for v in xs) and xs == sorted(xs)


def test_system_metrics_and_histograms(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    series = get(client, "/api/runs/r000abc/system")["series"]
    assert set(series) == {"cpu.percent", "proc.rss_bytes"}
    assert series["proc.rss_bytes"]["y"] == [1.2e9 + 3e6 * i for i in range(12)]
    hists = get(client, "/api/runs/r000abc/histograms")["histograms"]
    items = hists["gradients/fc.weight"]
    assert [h["step"] for h in items] == [0, 400, 800, 1200, 1600]
    assert all(len(h["bins"]) == len(h["counts"]) + 1 == 21 for h in items)
    assert items[-1]["counts"][6] == pytest.approx(100.0)  # step 1600: the peak moved to bin 6
    from runstream.ui import data

    monkeypatch.setattr(data, "HISTOGRAM_STEPS", 2)  # the latest steps only, cut by ClickHouse
    items = get(client, "/api/runs/r000abc/histograms")["histograms"]["gradients/fc.weight"]
    assert [h["step"] for h in items] == [1200, 1600]


def test_compare_overlays_runs_and_groups_by_a_config_key(client: Any) -> None:
    ids = ["r000abc", "r001abc", "r002abc", "r003abc"]
    meta = get(client, "/api/compare", runs=",".join([*ids, "nope"]))
    assert [r["id"] for r in meta["runs"]] == ids
    assert meta["metrics"] == ["acc", "epoch", "loss", "lr", "val/loss"]
    assert "optimizer.name" in meta["config_keys"]
    body = get(client, "/api/compare/history", runs=",".join(ids), key="loss", samples=200)
    assert [s["run_ids"] for s in body["series"]] == [[i] for i in ids]
    grouped = get(
        client, "/api/compare/history", runs=",".join(ids), key="lr", group_by="lr", samples=50
    )
    labels = {s["label"]: s for s in grouped["series"]}
    assert set(labels) == {"lr=0.001 (n=2)", "lr=0.003 (n=2)"}
    group = labels["lr=0.003 (n=2)"]["points"]
    # Both runs of a group logged the same lr schedule: mean == min == max, 0.003 at the start.
    assert math.isclose(group["y"][0], 0.003, rel_tol=0.02)
    assert all(
        math.isclose(a, b) and math.isclose(b, c)
        for a, b, c in zip(group["min"], group["y"], group["max"], strict=True)
    )


def test_compare_marks_each_runs_nan_and_infinity(client: Any) -> None:
    runs = f"{ui_seed.NAN_RUN},{ui_seed.BIG_RUN}"
    body = get(client, "/api/compare/history", runs=runs, key="loss", samples=100)
    marks = {s["run_ids"][0]: s["points"]["nonfinite"] for s in body["series"]}
    assert marks[ui_seed.NAN_RUN] == {"x": [300, 301], "y": ["NaN", "Infinity"]}
    assert marks[ui_seed.BIG_RUN] == {
        "x": [ui_seed.NAN_STEP * BIG // ui_seed.BIG_POINTS],
        "y": ["NaN"],
    }
    grouped = get(
        client, "/api/compare/history", runs=runs, key="loss", samples=100, group_by="model"
    )
    assert all("nonfinite" not in s["points"] for s in grouped["series"])  # means, not points


def test_alerts_newest_first_and_by_project(client: Any) -> None:
    alerts = get(client, "/api/alerts")["alerts"]
    assert [a["run_id"] for a in alerts] == [ui_seed.NAN_RUN, "r007abc"]
    assert alerts[0]["delivery_state"] == "pending" and alerts[0]["rule"] == "user"
    assert get(client, "/api/alerts", project=ui_seed.OTHER_PROJECT)["alerts"] == []
    # Finding 16 (issue 13): each alert names its run and says whether the run still runs; the
    # answer says whether a webhooks file exists where the UI runs.
    by_run = {r.run_id: r for r in vision_runs()}
    for alert in alerts:
        assert alert["run_name"] == by_run[alert["run_id"]].name
        assert alert["run_status"] == by_run[alert["run_id"]].status
    body = get(client, "/api/alerts")
    assert body["webhooks_configured"] is False and body["webhooks_file"].endswith("webhooks.toml")


def test_sql_console_reads_and_refuses_writes(client: Any, seeded: Settings) -> None:
    body = get(
        client, "/api/sql", q="SELECT name, count() AS n FROM metrics GROUP BY name ORDER BY name"
    )
    assert body["columns"] == ["name", "n"] and body["types"][1].startswith("UInt")
    assert ["loss", BIG + 12 * 2000 + 500 + 300 + 3 + 100] in body["rows"]
    big = get(client, "/api/sql", q="SELECT number FROM numbers(100000)")
    assert big["truncated"] and len(big["rows"]) == 5000
    events = scalar(seeded, "SELECT count() FROM events")
    for sql in (
        "INSERT INTO events (run_id) VALUES ('x')",
        "DROP TABLE events",
        "SELECT 1; DROP TABLE events",
        "ALTER TABLE events DELETE WHERE 1",
        "SELECT * FROM file('/etc/passwd')",
        "SELECT 1 SETTINGS readonly = 0",
        "",
    ):
        refused = get(client, "/api/sql", 400, q=sql)
        assert refused["error"]
    assert scalar(seeded, "SELECT count() FROM events") == events


def test_sql_console_explains_aggregate_states_and_typos(client: Any) -> None:
    """Findings 3 and 17 (issue 13): a table of partial aggregates points to its *_current view;
    a typo is "not a read statement", not an attempt to change the database."""
    for table in ("runs", "run_summaries"):
        refused = get(client, "/api/sql", 400, q=f"SELECT * FROM {table} LIMIT 1")
        assert "runs_current / run_summaries_current" in refused["error"], refused
    typo = get(client, "/api/sql", 400, q="SELEC oops")["error"]
    assert "'SELEC' is not a read statement" in typo and "(SELECT, WITH" in typo
    assert "change" not in typo
    drop = get(client, "/api/sql", 400, q="DROP TABLE events")["error"]
    assert "never changes the database" in drop


def test_sql_scope_names_the_user_and_the_other_databases(client: Any, seeded: Settings) -> None:
    """Finding 2 (issue 13): the console says whom it reads as; the default user sees the
    server's other databases, and the page names them (docs/ui.md, "SQL")."""
    scope = get(client, "/api/sql/scope")
    assert scope["database"] == seeded.clickhouse_database
    assert scope["user"] == scalar(seeded, "SELECT currentUser()")
    others = scalar(
        seeded,
        "SELECT count() FROM system.databases WHERE name NOT IN "
        "(currentDatabase(), 'system', 'INFORMATION_SCHEMA', 'information_schema')",
    )
    assert len(scope["other_databases"]) == min(20, others)
    assert seeded.clickhouse_database not in scope["other_databases"]
    assert "system" not in scope["other_databases"]


def test_step_metric_axis_counts_the_points_before_its_first_value(services: Services) -> None:
    """Finding 18 (issue 13): on an epoch axis the points logged before the first epoch have no
    x; the answer says how many and how many x positions there are (the chart's header)."""
    from runstream.ui import create_app

    settings = isolated_settings(services, prefix="us")
    try:
        client = connect(settings)
        t0 = "toDateTime64('2026-11-28 10:00:00', 6, 'UTC')"
        rows = [("run_started", 0, '{"name": "pre-epoch"}')]
        # Seven points of loss, then six with an epoch (0, 0, 1, 1, 2, 2) in the same event.
        for s in range(13):
            metrics = {"loss": 3.0 - s / 10} if s < 7 else {"loss": 2.0, "epoch": (s - 7) // 2}
            rows.append(("metrics_logged", 1 + s, json.dumps({"step": s, "metrics": metrics})))
        rows.append(("metric_defined", 20, '{"name": "loss", "step_metric": "epoch"}'))
        values = ", ".join(
            f"(generateUUIDv4(), 1, '{t}', 'pre', 'pe1', {seq}, {t0} + INTERVAL {seq} SECOND, "
            f"'python', '0', 'seed', 1, '{body}', 0, 0)"
            for t, seq, body in rows
        )
        client.command(
            "INSERT INTO events (event_id, schema_version, type, project, run_id, seq, ts, "
            "producer_sdk, producer_version, producer_host, producer_pid, body, "
            f"kafka_partition, kafka_offset) VALUES {values}"
        )
        refresh(client, settings.clickhouse_database)
        with starlette_testclient.TestClient(create_app(settings)) as c:
            body = get(c, "/api/runs/pe1/history", key="loss", x="epoch", samples=1000)
            assert body["before_first_x"] == 7 and body["x_values"] == 3
            assert "before_first_x" not in get(c, "/api/runs/pe1/history", key="loss")
    finally:
        connect(settings).command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_every_write_method_is_refused(client: Any, method: str) -> None:
    for path in ("/", "/api/runs", "/api/sql", "/api/runs/r000abc"):
        response = client.request(method, path, json={"q": "DROP TABLE events"})
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"


def test_front_end_is_served_with_a_strict_policy(client: Any) -> None:
    index = client.get("/")
    assert index.status_code == 200 and '<script type="module" src="/static/app.js">' in index.text
    assert "default-src 'self'" in index.headers["content-security-policy"]
    uplot = client.get("/static/vendor/uplot/uPlot.esm.js")
    assert uplot.status_code == 200 and "export { uPlot as default }" in uplot.text
    assert client.get("/static/vendor/uplot/LICENSE").status_code == 200
    assert client.get("/api/nothing").status_code == 404


def test_a_token_guards_every_request(seeded: Settings) -> None:
    from runstream.ui import create_app

    token = "s3cret-token"
    with starlette_testclient.TestClient(create_app(seeded, token=token)) as c:
        assert c.get("/api/projects").status_code == 401
        assert c.get("/").status_code == 401
        assert "Basic" in c.get("/").headers["www-authenticate"]
        wrong = {"Authorization": "Bearer nope"}
        assert c.get("/api/projects", headers=wrong).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert c.get("/api/projects", headers=bearer).status_code == 200
        basic = base64.b64encode(f"anyone:{token}".encode()).decode()
        assert (
            c.get("/api/projects", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        )
        # The link with ?token= sets the cookie and drops the token from the address.
        link = c.get(f"/?token={token}", follow_redirects=False)
        assert link.status_code == 303 and link.headers["location"] == "/"
        assert token not in link.headers["set-cookie"]
        assert "httponly" in link.headers["set-cookie"].lower()
        assert c.get("/api/projects").status_code == 200  # the cookie jar has it now
        assert c.post("/api/projects", headers=bearer).status_code == 405


def test_history_against_a_step_metric_and_relative_time(client: Any) -> None:
    run = get(client, "/api/runs/r000abc")
    assert run["step_metrics"] == ["epoch"]
    body = get(client, "/api/runs/r000abc/history", key="val/loss", x="epoch", samples=0)
    # val/loss at steps 99, 199, ...; epoch logged every 50 steps: the latest epoch at or before.
    assert body["points"]["x"] == [float(s // 50) for s in range(99, 2000, 100)]
    refused = get(client, f"/api/runs/{ui_seed.NAN_RUN}/history", 400, key="loss", x="epoch")
    assert "epoch" in refused["error"]
    rel = get(client, "/api/runs/r000abc/history", key="loss", x="relative_time", samples=0)
    xs = rel["points"]["x"]
    assert len(xs) == 2000
    assert math.isclose(xs[0], 0.05) and math.isclose(xs[-1], 100.0)  # a point every 50 ms


def test_runstream_ui_serves_and_says_when_its_port_is_taken(seeded: Settings) -> None:
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from runstream.deploy.local.workers import child_env, default_workers
    from tests.conftest import free_port

    assert "ui" in [w.name for w in default_workers()]  # runstream dev up starts it
    port = free_port()
    argv = [sys.executable, "-m", "runstream", "ui", "--port", str(port)]
    argv += ["--database", seeded.clickhouse_database, "--clickhouse", seeded.clickhouse_url]
    server = subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == f"runstream ui: http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                projects = httpx.get(f"http://127.0.0.1:{port}/api/projects").json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert len(projects["projects"]) == 2
        taken = subprocess.run(argv, check=False, env=child_env(), capture_output=True, text=True)
        assert taken.returncode == 1
        assert f"port {port} on 127.0.0.1 is in use" in taken.stderr
    finally:
        server.terminate()
        server.wait(10)
    with socket.socket() as s:  # the port is free again: the server really stopped
        s.bind(("127.0.0.1", port))


def test_a_zoom_on_a_time_or_step_metric_axis_fetches_the_steps_it_covers(client: Any) -> None:
    from datetime import datetime

    run = get(client, f"/api/runs/{ui_seed.BIG_RUN}")
    t0 = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00")).timestamp()
    # A point every millisecond from t0: the spike at SPIKE ms, a window of 10 s around it.
    lo, hi = (SPIKE - 5000) / 1000, (SPIKE + 5000) / 1000
    for x, shift in (("time", t0), ("relative_time", 0.0)):
        points = get(
            client,
            f"/api/runs/{ui_seed.BIG_RUN}/history",
            key="loss",
            x=x,
            samples=100,
            min_x=lo + shift,
            max_x=hi + shift,
        )["points"]
        assert len(points["x"]) == 100
        assert all(lo + shift - 1e-3 <= v <= hi + shift + 1e-3 for v in points["x"])
        assert max(points["max"]) == ui_seed.SPIKE_VALUE
    # epoch is logged every 50 steps (epoch e at step 50 e): epochs 10..12 cover steps 500..649.
    points = get(
        client,
        "/api/runs/r000abc/history",
        key="loss",
        x="epoch",
        samples=0,
        min_x=10,
        max_x=12,
    )["points"]
    assert len(points["x"]) == 150 and set(points["x"]) == {10.0, 11.0, 12.0}
    assert get(client, "/api/runs/r000abc/history", 400, key="loss", min_x="a", max_x=2)


def test_a_run_id_in_two_projects_is_told_apart_by_project(client: Any, seeded: Settings) -> None:
    # Last in the module: it adds a run.
    connect(seeded).command(
        "INSERT INTO events (event_id, schema_version, type, project, run_id, seq, ts, "
        "producer_sdk, producer_version, producer_host, producer_pid, body, kafka_partition, "
        "kafka_offset) VALUES (generateUUIDv4(), 1, 'run_started', {p:String}, 'r000abc', 0, "
        "now64(6), 'python', '0', 'seed', 1, '{\"name\":\"same id\"}', 0, 0)",
        parameters={"p": ui_seed.OTHER_PROJECT},
    )
    refresh(connect(seeded), seeded.clickhouse_database, [(ui_seed.OTHER_PROJECT, "r000abc")])
    ambiguous = get(client, "/api/runs/r000abc", 400)
    assert ui_seed.OTHER_PROJECT in ambiguous["error"] and "project" in ambiguous["error"]
    assert get(client, "/api/runs/r000abc", project=ui_seed.OTHER_PROJECT)["name"] == "same id"
    run = get(client, "/api/runs/r000abc", project=ui_seed.PROJECT)
    assert run["name"] == "resnet-adam-lr0.001-s0"
    hist = get(client, "/api/runs/r000abc/history", key="loss", project=ui_seed.PROJECT, samples=10)
    assert len(hist["points"]["x"]) == 10
    meta = get(client, "/api/compare", runs="r000abc", project=ui_seed.PROJECT)
    assert [r["name"] for r in meta["runs"]] == ["resnet-adam-lr0.001-s0"]
