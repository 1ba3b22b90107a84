"""The web UI's endpoints, over HTTP as a browser calls them, each beside its floor.

    python -m bench.ui [--runs 100000] [--points 10000000] [--metrics 1000]
                       [--metric-steps 1000] [--reps 20] [--live-points 20]
                       [--parts 1234]

A real local stack (bench/common.py); the real schema (``runstream migrate``); the UI served by
``runstream ui`` in a process of its own on a free port, called with httpx and
``Accept-Encoding: gzip`` as a browser calls it, so the bytes on the wire are real. Data are
generated inside ClickHouse (bench/query_latency.py) and the runs' lifecycle events go through
the sink's writer, so every view fills itself as in production. Four measurements:

(1) the runs table's first page (``/api/runs``, 50 runs) at ``--runs`` runs, as opened, sorted
    by a summary metric (a click on its header) and filtered (target: < 300 ms server time);
(2) a 1,000-bucket chart of one metric of ``--points`` points (``/api/runs/{id}/history``,
    what a chart asks for) and a zoom into a fifth of it (target: < 200 ms and < 100 KB sent);
(3) a run page with ``--metrics`` metrics: what the page asks for on load, the run
    (``/api/runs/{id}``: fields, metric names, alerts) and then the charts' series; the page
    draws its first 48 chart cards and loads those that scroll into view: all 48 here (a tall
    window), 6 requests at a time (a browser's connections per host over HTTP/1.1);
(4) from ``run.log`` (the SDK, Kafka, ``runstream sink`` in a process of its own) to the new
    step being in the data of the chart of an open run page (Chromium driven by Playwright;
    the charts keep their data in ``window.__runstreamCharts``), ``--live-points`` steps
    logged 1-2 s apart; beside it the same path up to the row being readable in ClickHouse
    (target: p95 < 3 s).

For (1)-(3), ``--reps`` timed requests after one untimed: the median and p95 of the server time
(the ``Server-Timing`` header: the endpoint's queries, Python and JSON encoding, not gzip) and
of the client time (request to last byte, decoded), the ClickHouse share of the server time
(``system.query_log``: the queries that ran during each request), the time to JSON-encode the
body alone (orjson, measured here), and the bytes sent (gzip) and before gzip. The floor: the
same data read with one plain clickhouse-connect query, the least any server on ClickHouse
can do; ``x floor`` is the server time over it.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import free_port, local_stack, machine, percentile, table
from bench.query_latency import UNLIMITED, Plan, lifecycle_events, points_sql, settle
from runstream.deploy.local.workers import child_env, settings_env
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.migrations import migrate

PROJECT = "bench"  # bench/query_latency.py's points and lifecycle events go to this project
LIVE_PROJECT = "live"
PAGE = 50  # the runs table's default page size (runs.js)
SAMPLES = 1000  # a chart's default buckets (chart.js)
FIRST_CHARTS = 48  # chart cards a run page draws at first (run.js)
BROWSER_CONNECTIONS = 6


@dataclass
class Samples:
    """The repetitions of one measurement."""

    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    query_ms: list[float] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    wire_bytes: int = 0
    raw_bytes: int = 0
    floor_ms: list[float] = field(default_factory=list)


def p(values: Sequence[float], q: float) -> float:
    return percentile(sorted(values), q)


class Server:
    """``runstream ui`` on a free port, in a process of its own."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = child_env(settings_env(settings))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runstream", "ui", "--port", str(self.port)],
            env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("runstream ui did not answer in 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def client_for(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Accept-Encoding": "gzip", "Accept": "application/json"},
        limits=httpx.Limits(max_connections=BROWSER_CONNECTIONS),
        timeout=120,
    )


@dataclass
class Response:
    server_ms: float
    client_ms: float
    wire_bytes: int
    raw_bytes: int
    body: Any


def get(http: Any, path: str, params: dict[str, Any]) -> Response:
    started = time.perf_counter()
    response = http.get(path, params={k: v for k, v in params.items() if v is not None})
    content = response.content  # read and decoded
    client_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} {params}: {response.status_code} {content[:500]!r}")
    timing = response.headers.get("server-timing", "app;dur=nan")
    server_ms = float(timing.split("dur=")[1].split(",")[0])
    wire = getattr(response, "num_bytes_downloaded", len(content))
    return Response(server_ms, client_ms, wire, len(content), orjson.loads(content))


def encode_ms(body: Any) -> float:
    started = time.perf_counter()
    orjson.dumps(body)
    return (time.perf_counter() - started) * 1000


Request = tuple[str, dict[str, Any]]


class Profiler:
    """The same app in this process (Starlette's TestClient: the ASGI call, no network), with
    the time spent in the read layer's queries (:class:`runstream.read.Reader`: round trip to
    ClickHouse, its own time and the decoding of the result) added up: what is left of the
    server time is Python (the endpoint's work and JSON encoding)."""

    def __init__(self, settings: Settings) -> None:
        from starlette.testclient import TestClient

        from runstream.read import reader
        from runstream.ui.app import create_app

        self.spent = 0.0
        lock = threading.Lock()

        def timed(method: Any) -> Any:
            def call(*a: Any, **k: Any) -> Any:
                started = time.perf_counter()
                try:
                    return method(*a, **k)
                finally:
                    with lock:
                        self.spent += time.perf_counter() - started

            return call

        def timed_stream(method: Any) -> Any:
            def call(*a: Any, **k: Any) -> Any:
                iterator = iter(method(*a, **k))
                while True:
                    started = time.perf_counter()
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                    finally:
                        with lock:
                            self.spent += time.perf_counter() - started
                    yield item

            return call

        cls = reader.Reader
        cls.query = timed(cls.query)  # type: ignore[method-assign]
        cls.arrow = timed(cls.arrow)  # type: ignore[method-assign]
        cls.arrow_stream = timed_stream(cls.arrow_stream)  # type: ignore[method-assign]
        self.client = TestClient(create_app(settings))

    def round(self, requests: list[Request]) -> tuple[float, float]:
        """(ms in queries, ms of JSON encoding) of ``requests``, one after the other."""
        self.spent = 0.0
        bodies = [get(self.client, path, params).body for path, params in requests]
        return self.spent * 1000, sum(encode_ms(b) for b in bodies)


def measure(
    http: httpx.Client,
    profiler: Profiler,
    reps: int,
    requests: list[Request],
    floor: Callable[[], Any],
    *,
    at_once: int = 1,
) -> Samples:
    """``reps`` timed rounds of ``requests`` (``at_once`` at a time: a round's client time is
    its wall time, its server time the sum) after one untimed, then as many of the profile
    (:class:`Profiler`) and of ``floor``."""
    pool = ThreadPoolExecutor(at_once)

    def one_round() -> list[Response]:
        if at_once == 1:
            return [get(http, path, params) for path, params in requests]
        return list(pool.map(lambda r: get(http, *r), requests))

    one_round()
    floor()
    out = Samples()
    for _ in range(reps):
        started = time.perf_counter()
        responses = one_round()
        out.client_ms.append((time.perf_counter() - started) * 1000)
        out.server_ms.append(sum(r.server_ms for r in responses))
        out.wire_bytes = sum(r.wire_bytes for r in responses)
        out.raw_bytes = sum(r.raw_bytes for r in responses)
    pool.shutdown()
    profiler.round(requests)
    for _ in range(reps):
        query, encode = profiler.round(requests)
        out.query_ms.append(query)
        out.encode_ms.append(encode)
    for _ in range(reps):
        started = time.perf_counter()
        floor()
        out.floor_ms.append((time.perf_counter() - started) * 1000)
    return out


def rows_of(label: str, s: Samples, target: str) -> list[str]:
    server = p(s.server_ms, 0.5)
    floor = p(s.floor_ms, 0.5)
    return [
        label,
        f"{server:.1f}",
        f"{p(s.server_ms, 0.95):.1f}",
        f"{p(s.client_ms, 0.5):.1f}",
        f"{p(s.client_ms, 0.95):.1f}",
        f"{p(s.query_ms, 0.5):.1f}",
        f"{p(s.encode_ms, 0.5):.1f}",
        f"{s.wire_bytes / 1000:,.1f}",
        f"{s.raw_bytes / 1000:,.1f}",
        f"{floor:.1f}",
        f"{server / floor:.1f}x",
        target,
    ]


HEADER = ["request", "server p50", "p95", "client p50", "p95", "queries p50", "json p50",
          "KB sent", "KB raw", "floor p50", "x floor", "target"]  # fmt: skip


# --- (1) the runs table ---------------------------------------------------------------------
RUN_COLUMNS = (
    "project, run_id, name, status, tags, `group`, job_type, notes, config, summary, started_at, "
    "finished_at, exit_code, last_step, last_event_at"
)


def bench_runs(
    settings: Settings, client: Any, http: httpx.Client, prof: Profiler, args: argparse.Namespace
) -> list[tuple[str, Samples, str]]:
    database = settings.clickhouse_database
    plan = Plan(runs=args.runs, groups=20, metrics=5, steps=4, seed=1)
    print(f"(1) seeding {args.runs:,} runs ...", flush=True)
    # 2,000 runs per INSERT: its arrays travel as form fields, which ClickHouse caps (128 KiB),
    # and the lifecycle events of 100,000 runs at once take more memory than the views may use.
    for first in range(0, plan.runs, 2_000):
        part = copy.copy(plan)  # the same runs (plan.runs: which are finished), a slice of them
        for name in ("ids", "lr", "start_us", "step_us", "order", "group"):
            setattr(part, name, getattr(plan, name)[first : first + 2_000])
        points = len(part.ids) * len(plan.metrics) * plan.steps
        client.command(points_sql(database, part, 0, points), parameters=part.parameters(),
                       settings=UNLIMITED)  # fmt: skip
        lifecycle_events(client, database, part, running=0, failed=0)
    out = []
    cases = [
        ("runs: first page", {}, "started_at DESC", ""),
        ("runs: sorted by summary", {"order_by": '-summary["val/loss"]'},
         "JSONExtractFloat(summary, 'val/loss') DESC", ""),
        ("runs: filtered and sorted", {"where": 'summary["val/loss"] < 0.3 and config.lr > 1e-4',
                                       "order_by": '-summary["val/loss"]'},
         "JSONExtractFloat(summary, 'val/loss') DESC",
         "AND JSONExtractFloat(summary, 'val/loss') < 0.3 "
         "AND JSONExtractFloat(config, 'lr') > 1e-4"),
    ]  # fmt: skip
    for label, extra, order, where in cases:
        params = {"project": PROJECT, "limit": PAGE, **extra}
        floor_sql = (
            f"SELECT {RUN_COLUMNS}, count() OVER () FROM runs_current "
            f"WHERE project = {{p:String}} {where} ORDER BY {order} LIMIT {PAGE}"
        )
        samples = measure(
            http, prof, args.reps, [("/api/runs", params)],
            lambda floor_sql=floor_sql: client.query(floor_sql, parameters={"p": PROJECT}),  # type: ignore[misc]
        )  # fmt: skip
        out.append((label, samples, "< 300 ms"))
    page = get(http, "/api/runs", {"project": PROJECT, "limit": PAGE})
    assert page.body["total"] == args.runs, page.body["total"]
    # (2) and (3) measure charts, not runs_current: every request of theirs reads the run's row
    # there, which (1) measures already.
    for name in ("metrics", "run_summaries", "events", "runs", "run_fields", "run_snapshots"):
        client.command(f"TRUNCATE TABLE IF EXISTS `{database}`.{name}")
    return out


# --- (2) one chart of a long metric -----------------------------------------------------------
def bench_chart(
    settings: Settings, client: Any, http: httpx.Client, prof: Profiler, args: argparse.Namespace
) -> list[tuple[str, Samples, str]]:
    database = settings.clickhouse_database
    plan = Plan(runs=1, groups=1, metrics=1, steps=args.points, seed=2)
    print(f"(2) seeding one metric of {args.points:,} points ...", flush=True)
    for first in range(0, args.points, 10_000_000):
        client.command(points_sql(database, plan, first, min(10_000_000, args.points - first)),
                       parameters=plan.parameters(), settings=UNLIMITED)  # fmt: skip
    lifecycle_events(client, database, plan, running=0, failed=0)
    # Timed once ClickHouse has merged what the 10M-point insert left (a chart is seldom opened
    # within seconds of ten million points landing at once); the wait is printed.
    for name in ("metrics", "metric_blocks", "run_summaries"):
        parts, waited = settle(client, database, name, 120)
        print(f"(2) {name}: {parts} parts after {waited:.0f} s of merges", flush=True)
    run_id, key = plan.ids[0], plan.metrics[0]
    out = []
    lo, hi = args.points * 2 // 5, args.points * 3 // 5 - 1
    cases: list[tuple[str, int | None, int | None]] = [
        ("chart: 1,000 buckets", None, None), ("chart: zoomed to a fifth", lo, hi)]  # fmt: skip
    for label, zoom_lo, zoom_hi in cases:
        params = {"key": key, "project": PROJECT, "x": "step", "samples": SAMPLES,
                  "min_step": zoom_lo, "max_step": zoom_hi}  # fmt: skip
        a, b = (zoom_lo or 0, args.points - 1 if zoom_hi is None else zoom_hi)
        floor_sql = (
            "SELECT max(step), argMax(value, step), min(value), max(value) FROM metrics "
            "WHERE project = {p:String} AND run_id = {r:String} AND name = {n:String} "
            "AND step BETWEEN {a:Int64} AND {b:Int64} "
            "GROUP BY intDiv((step - {a:Int64}) * {s:UInt32}, {b:Int64} - {a:Int64} + 1) AS bucket "
            "ORDER BY bucket"
        )
        floor_params = {"p": PROJECT, "r": run_id, "n": key, "a": a, "b": b, "s": SAMPLES}
        samples = measure(
            http, prof, args.reps, [(f"/api/runs/{run_id}/history", params)],
            lambda sql=floor_sql, fp=floor_params: client.query(sql, parameters=fp),  # type: ignore[misc]
        )  # fmt: skip
        out.append((label, samples, "< 200 ms, < 100 KB"))
    body = get(http, f"/api/runs/{run_id}/history", {"key": key, "project": PROJECT,
                                                     "samples": SAMPLES}).body  # fmt: skip
    # 10M steps in 1,000 buckets: whole 1,024-step blocks (metric_blocks), 977 buckets of 10,240.
    assert SAMPLES // 2 < len(body["points"]["x"]) <= SAMPLES, len(body["points"]["x"])
    return out


# --- (3) a run page with many metrics ----------------------------------------------------------
def metrics_sql(database: str, metrics: int, steps: int) -> str:
    """``metrics`` metrics (``layer0000/grad_norm`` ...) of ``steps`` steps each, one run."""
    return f"""
INSERT INTO `{database}`.metrics (project, run_id, name, step, value, ts, seq)
SELECT '{PROJECT}', {{run:String}},
       concat('layer', leftPad(toString(intDiv(number, {steps})), 4, '0'), '/grad_norm'),
       number % {steps} AS s,
       toFloat64(toFloat32(0.4 + 4 * exp(-4 * s / {steps}) + intHash64(number) / 1.8446744e19)),
       fromUnixTimestamp64Micro({{start:Int64}} + s * {{pace:Int64}}, 'UTC'),
       toUInt64(s + 1)
FROM numbers({metrics * steps})
"""


def bench_run_page(
    settings: Settings, client: Any, http: httpx.Client, prof: Profiler, args: argparse.Namespace
) -> list[tuple[str, Samples, str]]:
    database = settings.clickhouse_database
    plan = Plan(runs=1, groups=1, metrics=1, steps=args.metric_steps, seed=3)
    run_id = plan.ids[0]
    print(f"(3) seeding a run of {args.metrics:,} metrics x {args.metric_steps:,} steps ...",
          flush=True)  # fmt: skip
    client.command(metrics_sql(database, args.metrics, args.metric_steps),
                   parameters={"run": run_id, "start": plan.start_us[0], "pace": plan.step_us[0]},
                   settings=UNLIMITED)  # fmt: skip
    lifecycle_events(client, database, plan, running=0, failed=0)
    names = [f"layer{i:04d}/grad_norm" for i in range(min(FIRST_CHARTS, args.metrics))]
    doc: list[Request] = [(f"/api/runs/{run_id}", {"project": PROJECT})]
    charts: list[Request] = [
        (f"/api/runs/{run_id}/history",
         {"key": name, "project": PROJECT, "x": "step", "samples": SAMPLES})
        for name in names
    ]  # fmt: skip

    where = "project = {p:String} AND run_id = {r:String}"
    fp = {"p": PROJECT, "r": run_id}
    doc_floor = (
        f"SELECT {RUN_COLUMNS}, (SELECT groupArray(name) FROM (SELECT name "
        f"FROM run_summaries_current WHERE {where} ORDER BY name)) FROM runs_current "
        f"WHERE {where}"
    )
    steps = args.metric_steps
    charts_floor = (
        "SELECT name, max(step), argMax(value, step), min(value), max(value) FROM metrics "
        f"WHERE {where} AND name IN {{n:Array(String)}} "
        f"GROUP BY name, intDiv(step * {SAMPLES}, {steps}) AS bucket ORDER BY name, bucket"
    )

    def doc_floor_query() -> Any:
        return client.query(doc_floor, parameters=fp)

    def charts_floor_query() -> Any:
        return client.query(charts_floor, parameters={**fp, "n": names})

    out = [
        ("run page: the run (GET /api/runs/{id})",
         measure(http, prof, args.reps, doc, doc_floor_query), ""),
        (f"run page: {len(names)} charts, 6 at a time",
         measure(http, prof, args.reps, charts, charts_floor_query,
                 at_once=BROWSER_CONNECTIONS), ""),
    ]  # fmt: skip
    body = get(http, *doc[0]).body
    assert len(body["metrics"]) == args.metrics, len(body["metrics"])
    return out


# --- (4) from run.log to the open page ---------------------------------------------------------
CHART = (
    "[...(window.__runstreamCharts || [])]"
    ".find(c => c.name === 'loss' && c.container.isConnected && c.u)"
)


def bench_live(
    settings: Settings, client: Any, server: Server, args: argparse.Namespace
) -> list[list[str]]:
    from playwright.sync_api import sync_playwright

    import runstream

    database = settings.clickhouse_database
    env = child_env({**settings_env(settings), "RUNSTREAM_SINK_GROUP": f"ui-{uuid.uuid4().hex[:8]}",
                     "RUNSTREAM_SINK_METRICS_PORT": "0"})  # fmt: skip
    sink = subprocess.Popen([sys.executable, "-m", "runstream", "sink"], env=env)
    run = runstream.init(project=LIVE_PROJECT, settings=settings)
    query = (
        f"SELECT max(step), count() FROM `{database}`.metrics "
        "WHERE project = {p:String} AND run_id = {r:String} AND name = 'loss'"
    )
    parameters = {"p": LIVE_PROJECT, "r": run.id}
    stored: list[tuple[float, int]] = []  # (poll time, highest step in ClickHouse)
    stop = threading.Event()

    def poll() -> None:
        poller = connect(settings)
        while not stop.is_set():
            row = poller.query(query, parameters=parameters).result_rows[0]
            if row[1]:
                stored.append((time.time(), int(row[0])))
            time.sleep(0.02)

    drawn: list[float] = []
    fetches: list[tuple[str, float]] = []
    in_clickhouse: list[float] = []
    try:
        run.log({"loss": 1.0}, step=0)  # the sink joins its group; the page opens on a live run
        deadline = time.time() + 120
        while not client.query(query, parameters=parameters).result_rows[0][1]:
            if time.time() > deadline:
                raise RuntimeError("the first point never reached ClickHouse")
            time.sleep(0.1)
        threading.Thread(target=poll, daemon=True).start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=["--no-sandbox"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/#/run/{run.id}?project={LIVE_PROJECT}")
            page.wait_for_function(f"() => {{ const c = {CHART}; return c && c.u.data[0].length }}")
            rng = random.Random(4)
            for step in range(1, args.live_points + 1):
                time.sleep(rng.uniform(1.0, 2.0))  # out of phase with the page's refresh
                logged = time.time()
                run.log({"loss": 1.0 / (step + 1)}, step=step)
                page.wait_for_function(
                    f"s => {{ const c = {CHART}; const x = c && c.u.data[0];"
                    " return x && x.length && x[x.length - 1] >= s }",
                    arg=step, polling=10, timeout=30_000,
                )  # fmt: skip
                drawn.append(time.time() - logged)
                seen = next((at for at, s in stored if s >= step), None)
                in_clickhouse.append(float("nan") if seen is None else seen - logged)
            fetches = page.evaluate(
                "() => performance.getEntriesByType('resource')"
                ".filter(e => e.name.includes('/api/runs/'))"
                ".map(e => [e.name.includes('/history') ? 'history' : 'run', e.duration])"
            )
            browser.close()
    finally:
        stop.set()
        run.finish()
        sink.terminate()
        sink.wait(30)
    rows = [["(4) run.log to ...", "points", "p50 s", "p95 s", "max s", "target"]]
    for label, values in (("... the row in ClickHouse (a poll every 20 ms)", in_clickhouse),
                          ("... the step in the open page's chart", drawn)):  # fmt: skip
        done = sorted(v for v in values if not math.isnan(v))
        rows.append([label, str(len(done)), f"{p(done, 0.5):.2f}", f"{p(done, 0.95):.2f}",
                     f"{done[-1]:.2f}", "p95 < 3 s" if "chart" in label else ""])  # fmt: skip
    for kind in ("run", "history"):
        ms = sorted(d for k, d in fetches if k == kind)
        last = f"{ms[-1]:.0f}" if ms else ""
        rows.append([f"  the page's GET of the {kind} (ms, as the browser saw them)", str(len(ms)),
                     f"{p(ms, 0.5):.0f}", f"{p(ms, 0.95):.0f}", last, ""])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--metrics", type=int, default=1000)
    parser.add_argument("--metric-steps", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--live-points", type=int, default=20)
    parser.add_argument("--parts", default="1234", help="which measurements: 1234 all")
    args = parser.parse_args()
    os.environ.setdefault("RUNSTREAM_SYSTEM_METRICS_INTERVAL", "0")
    print(machine())
    with local_stack(partitions=1) as stack, tempfile.TemporaryDirectory() as spool:
        settings = stack.settings.with_overrides(dir=Path(spool))
        migrate(settings)
        client = connect(settings, send_receive_timeout=3600)
        server = Server(settings)
        try:
            prof = Profiler(settings)
            with client_for(server) as http:
                measured = [
                    *(bench_runs(settings, client, http, prof, args) if "1" in args.parts else []),
                    *(bench_chart(settings, client, http, prof, args) if "2" in args.parts else []),
                    *(bench_run_page(settings, client, http, prof, args)
                      if "3" in args.parts else []),
                ]  # fmt: skip
            if measured:
                print()
                print(table([HEADER, *(rows_of(label, s, t) for label, s, t in measured)]))
            print("ms; server: the Server-Timing header (queries, Python, JSON); queries: the "
                  "read layer's queries (round trip, ClickHouse, decoding) in that time; json: "
                  "orjson.dumps of the body; floor: one clickhouse-connect query of the same "
                  "data")  # fmt: skip
            if "4" in args.parts:
                print()
                print(table(bench_live(settings, client, server, args)), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
