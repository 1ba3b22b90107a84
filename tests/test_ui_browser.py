"""The web UI end to end in a real browser: Debian's chromium driven by Playwright (no browser
download: ``executable_path`` points at /usr/bin/chromium) against a uvicorn server this test
starts on a free port. Seeds a project, opens the runs table, filters it, opens a run and checks
that the drawn chart of a 1,000,000-point metric holds its one-step spike, compares two runs, and
saves a screenshot of each page under tests/artifacts/ui/ (issue 13, "Tests")."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.snapshots import refresh
from tests import ui_seed
from tests.conftest import Services, free_port, isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("RUNSTREAM_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts" / "ui"

sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")
if not Path(CHROMIUM).exists():
    # `make test` installs it (`make browser`); running pytest by hand without it is the one case
    # to skip, and only when asked to.
    if os.environ.get("RUNSTREAM_SKIP_BROWSER") != "1":
        raise RuntimeError(
            f"no chromium at {CHROMIUM}: run `make browser` (apt-get install chromium), point "
            "RUNSTREAM_TEST_CHROMIUM at one, or set RUNSTREAM_SKIP_BROWSER=1 to skip these tests"
        )
    pytest.skip(f"no chromium at {CHROMIUM} (RUNSTREAM_SKIP_BROWSER=1)", allow_module_level=True)


@pytest.fixture(scope="module")
def seeded(services: Services) -> Iterator[Settings]:
    settings: Settings = isolated_settings(services, prefix="ub")
    ui_seed.seed(settings)
    yield settings
    ui_seed.drop(settings)


@pytest.fixture(scope="module")
def server(seeded: Settings) -> Iterator[str]:
    """The UI over the seeded database, served by uvicorn in a thread; its base URL."""
    from runstream.ui import create_app

    port = free_port()
    config = uvicorn.Config(create_app(seeded), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        # Script errors fail the test; the browser's own log of the refused requests the test
        # makes on purpose (a bad filter, DROP TABLE: 400; an unknown run: 404) does not.
        pg.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error"
                and "status of 400" not in m.text
                and "status of 404" not in m.text
                else None
            ),
        )
        pg.goto(server)
        yield pg
        context.close()
        browser.close()
        assert errors == [], errors


def shot(page: Any, name: str) -> None:
    page.wait_for_timeout(300)  # let uPlot paint after the data arrived
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def drawn(page: Any, metric: str) -> Any:
    """Labels and columns of the uPlot chart of ``metric`` once it has data."""
    page.wait_for_function(
        "m => [...(window.__runstreamCharts || [])]"
        ".some(c => c.name === m && c.container.isConnected && c.drawn())",
        arg=metric,
    )
    return page.evaluate(
        "m => [...window.__runstreamCharts]"
        ".find(c => c.name === m && c.container.isConnected).drawn()",
        metric,
    )


def test_projects_runs_filter_run_compare_alerts_sql(page: Any, server: str) -> None:
    vision = [r for r in ui_seed.seed_runs() if r.project == ui_seed.PROJECT]

    # Projects
    page.wait_for_selector(".project-card")
    assert page.locator(".project-card").count() == 2
    shot(page, "1-projects")

    # Runs table: every run of the project, the live one marked running.
    page.click(f"text={ui_seed.PROJECT}")
    page.wait_for_selector("table.data tbody tr[data-run]")
    rows = page.locator("tbody tr[data-run]")
    assert rows.count() == len(vision)
    live = page.locator(f'tr[data-run="{ui_seed.LIVE_RUN}"] .status')
    assert live.inner_text() == "running"
    shot(page, "2-runs")

    # Sort by a summary column: a click on its header, descending first, done by ClickHouse.
    page.click("th[title='summary.loss']")
    page.wait_for_function("() => location.hash.includes('order=-summary.loss')")
    top = page.evaluate(
        "async () => (await (await fetch('/api/runs?project=vision&limit=1"
        "&order_by=-summary.loss')).json()).runs[0].id"
    )
    page.wait_for_function(
        "id => document.querySelector('tbody tr[data-run]')?.dataset.run === id", arg=top
    )
    assert page.locator("th[title='summary.loss'] .arrow").inner_text() == "↓"

    # Filter with the filter language: only adam runs with lr above 2e-3.
    page.fill('input[type="search"]', 'config.optimizer.name == "adam" and config.lr > 2e-3')
    page.keyboard.press("Enter")
    expected = {
        r.run_id
        for r in vision
        if r.config.get("optimizer", {}).get("name") == "adam" and float(r.config["lr"]) > 2e-3
    }
    page.wait_for_function(
        "n => document.querySelectorAll('tbody tr[data-run]').length === n", arg=len(expected)
    )
    shown = set(page.eval_on_selector_all("tbody tr[data-run]", "rs => rs.map(r => r.dataset.run)"))
    assert shown == expected
    assert "match" in page.inner_text(".page-head")
    shot(page, "3-runs-filtered")

    # A bad filter says why, in place.
    page.fill('input[type="search"]', "config.lr >")
    page.keyboard.press("Enter")
    page.wait_for_selector(".error")
    assert "config.lr" in page.inner_text(".error")

    # The run page of the million-point run: the drawn chart holds the one-step spike.
    page.goto(f"{server}/#/run/{ui_seed.BIG_RUN}")
    chart = drawn(page, "loss")
    labels, columns = chart["labels"], chart["data"]
    top = columns[labels.index("loss max")]
    assert max(v for v in top if v is not None) == ui_seed.SPIKE_VALUE
    xs = columns[0]
    spike_at = xs[top.index(ui_seed.SPIKE_VALUE)]
    assert abs(spike_at - ui_seed.SPIKE_STEP) <= ui_seed.BIG_POINTS / len(xs)
    assert len(xs) <= 1001  # buckets (and the step of the NaN), not a million points
    markers = columns[labels.index("NaN / inf")]
    assert [x for x, m in zip(xs, markers, strict=True) if m is not None] == [ui_seed.NAN_STEP]
    shot(page, "4-run-big")
    page.click("#theme")  # the dark palette, redrawn
    drawn(page, "loss")
    shot(page, "4-run-big-dark")
    page.click("#theme")

    # A diverged run: NaN and inf are markers, not dropped.
    page.goto(f"{server}/#/run/{ui_seed.NAN_RUN}")
    chart = drawn(page, "loss")
    markers = chart["data"][chart["labels"].index("NaN / inf")]
    assert sum(1 for v in markers if v is not None) == 2
    shot(page, "5-run-nan")

    # Compare two runs picked in the runs table.
    page.goto(f"{server}/#/p/{ui_seed.PROJECT}")
    page.wait_for_selector("tbody tr[data-run]")
    for run_id in ("r000abc", "r004abc"):
        page.check(f'tr[data-run="{run_id}"] input[type="checkbox"]')
    page.click("button.primary:has-text('Compare')")
    chart = drawn(page, "val/loss")
    assert {"resnet-adam-lr0.001-s0", "resnet-adam-lr0.01-s0"} <= set(chart["labels"])
    shot(page, "6-compare")

    # Grouped by a config key: one mean line and band per value.
    page.select_option("#group-by", "optimizer.name")
    page.wait_for_timeout(200)
    chart = drawn(page, "loss")
    assert any(label.startswith('optimizer.name="adam"') for label in chart["labels"])
    # Twelve runs grouped by optimizer: two mean lines, each with its band across six runs.
    ids = ",".join(f"r{i:03d}abc" for i in range(12))
    page.goto(f"{server}/#/compare?runs={ids}&group_by=optimizer.name")
    page.wait_for_function(
        "() => [...(window.__runstreamCharts || [])].some(c => c.name === 'loss'"
        " && c.container.isConnected && c.drawn() && c.drawn().labels.length > 4)"
    )
    labels = drawn(page, "loss")["labels"]
    assert {'optimizer.name="adam" (n=6)', 'optimizer.name="sgd" (n=6)'} <= set(labels)
    shot(page, "6b-compare-grouped")

    # Alerts and the SQL console.
    page.goto(f"{server}/#/alerts")
    page.wait_for_selector("table.data tbody tr")
    assert page.locator("tbody tr").count() == 2
    shot(page, "7-alerts")
    page.goto(f"{server}/#/sql")
    page.wait_for_selector(".result-meta:has-text('rows')")
    drawn(page, "sql")  # the quick chart of two columns
    page.wait_for_selector(".sql-scope code")  # whom the console reads as (finding 2)
    assert "Reads as user" in page.inner_text(".sql-scope")
    shot(page, "8-sql")
    page.fill("textarea", "DROP TABLE events")
    page.click("button:has-text('Run')")
    page.wait_for_selector(".error")
    shot(page, "9-sql-refused")


# The chart of `loss` on the page shown (a page left behind may still hold one).
LOSS = "[...window.__runstreamCharts].find(c => c.name === 'loss' && c.container.isConnected)"


def test_zoom_fetches_the_buckets_of_the_visible_steps(page: Any, server: str) -> None:
    page.goto(f"{server}/#/run/{ui_seed.BIG_RUN}")
    drawn(page, "loss")
    # A drag across the middle of the plot, as a reader zooms: the chart asks for that range.
    box = page.locator(".chart-card[data-metric='loss'] .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "() => { const x = " + LOSS + ".u.data[0];"
        " return x.length > 500 && x[0] > 300000 && x[x.length - 1] < 700000; }"
    )
    lo, hi = ui_seed.SPIKE_STEP - 5000, ui_seed.SPIKE_STEP + 5000
    page.evaluate(
        "([lo, hi]) => " + LOSS + ".zoomTo(lo, hi)",
        [lo, hi],
    )
    # The chart asks for min_step..max_step: about 10 steps per bucket now, not 1,000.
    page.wait_for_function(
        "([lo, hi]) => { const x = " + LOSS + ".u.data[0];"
        " return x.length > 500 && x[0] >= lo && x[x.length - 1] <= hi; }",
        arg=[lo, hi],
    )
    chart = drawn(page, "loss")
    top = chart["data"][chart["labels"].index("loss max")]
    assert ui_seed.SPIKE_VALUE in top
    xs = chart["data"][0]
    assert xs[top.index(ui_seed.SPIKE_VALUE)] == ui_seed.SPIKE_STEP  # within 10 steps: exact here
    shot(page, "10-run-zoomed")
    page.dblclick(".chart-card[data-metric='loss'] .u-over")
    page.wait_for_function("() => " + LOSS + ".u.data[0].at(-1) > 990000")


def test_a_running_run_updates_without_reloading(page: Any, server: str, seeded: Settings) -> None:
    page.goto(f"{server}/#/run/{ui_seed.LIVE_RUN}")
    before = drawn(page, "loss")["data"][0]
    assert before[-1] == 499
    page.evaluate("() => { window.__sameDocument = true; }")
    # The run logs 100 more steps (as the sink would write them).
    client = connect(seeded)
    client.command(
        "INSERT INTO events (event_id, schema_version, type, project, run_id, seq, ts, "
        "producer_sdk, producer_version, producer_host, producer_pid, body, kafka_partition, "
        "kafka_offset) SELECT generateUUIDv4(), 1, 'metrics_logged', {p:String}, {r:String}, "
        "10000 + number, now64(6), 'python', '0', 'seed', 1, "
        'concat(\'{"step":\', toString(500 + number), \',"metrics":{"loss":0.5}}\'), 0, 0 '
        "FROM numbers(100)",
        parameters={"p": ui_seed.PROJECT, "r": ui_seed.LIVE_RUN},
    )
    refresh(client, seeded.clickhouse_database, [(ui_seed.PROJECT, ui_seed.LIVE_RUN)])
    page.wait_for_function(
        "() => " + LOSS + ".u.data[0].at(-1) === 599",
        timeout=20_000,
    )
    assert page.evaluate("() => window.__sameDocument") is True  # no reload happened
    shot(page, "11-run-live")


def test_runs_table_sorts_by_step_and_errors_leave_a_clean_page(page: Any, server: str) -> None:
    """Findings 1, 8 and 9 of a fresh user (issue 13): the Step header sorts (the server takes
    last_step); Tags and Runtime do not look sortable; a bad filter keeps the headers, a way
    back, and a toolbar without an empty Compare pill or a stray "clear"; paging past the end
    lands on the last page; the page-size select shows the limit in use."""
    base = f"{server}/#/p/{ui_seed.PROJECT}"
    page.goto(base)
    page.wait_for_selector("tbody tr[data-run]")
    page.click("th[title='last_step']")
    page.wait_for_function("() => location.hash.includes('order=-last_step')")
    page.wait_for_selector("th[title='last_step'] .arrow")
    assert page.locator(".error").count() == 0
    steps = page.eval_on_selector_all(
        "tbody tr[data-run] td[data-col='last_step']", "tds => tds.map(t => Number(t.textContent))"
    )
    assert steps and steps == sorted(steps, reverse=True)
    sortable = page.eval_on_selector_all("th.sortable", "ths => ths.map(t => t.textContent)")
    assert not any(t.startswith(("Tags", "Runtime")) for t in sortable)

    page.evaluate("() => sessionStorage.clear()")  # runs ticked by an earlier test
    page.goto(f"{base}?where=config.lr%20%3E")
    page.wait_for_selector(".error")
    assert page.locator("table.data thead th[title='name']").count() == 1
    compare = page.locator("button.primary")
    assert compare.inner_text() == "Compare" and compare.is_disabled()
    assert not page.locator("button.ghost:has-text('clear')").is_visible()
    assert page.locator("button.ghost:has-text('reset')").count() == 1
    shot(page, "12-runs-bad-filter")

    page.goto(f"{base}?limit=2&offset=9999")
    page.wait_for_function("() => !location.hash.includes('9999')")
    page.wait_for_selector("tbody tr[data-run]")
    total = len([r for r in ui_seed.seed_runs() if r.project == ui_seed.PROJECT])
    last = (total - 1) // 2 * 2
    pager = page.inner_text(".pager")
    assert f"{last + 1}\u2013{min(last + 2, total)} of {total}" in pager
    assert f"page {last // 2 + 1} of {(total + 1) // 2}" in pager
    assert page.eval_on_selector(".pager select", "s => s.value") == "2"
    shot(page, "13-runs-paged-past-end")


def test_missing_things_say_so_and_lead_back(page: Any, server: str) -> None:
    """Findings 12, 14, 15 and 19 (issue 13): unknown compare ids, projects and runs are named
    as missing with a way back; a bad regex says so; cross-project compare names both projects;
    the tab chosen on one run does not carry over to the next."""
    page.goto(f"{server}/#/compare?runs=nope1,nope2")
    page.wait_for_selector(".error")
    assert "nope1, nope2" in page.inner_text(".error")
    assert page.inner_text(".crumbs").strip() == "Projects /"
    page.goto(f"{server}/#/compare?runs=r000abc,nlp00001")
    page.wait_for_selector(".chart-card")
    crumbs = page.inner_text(".crumbs")
    assert ui_seed.PROJECT in crumbs and ui_seed.OTHER_PROJECT in crumbs
    page.fill('input[type="search"]', "(")
    page.wait_for_selector(".error:has-text('invalid regular expression')")
    shot(page, "14-compare-bad-regex")

    page.goto(f"{server}/#/p/no-such-project")
    page.wait_for_selector(".error:has-text('no project named')")
    assert page.locator("a:has-text('all projects')").count() == 1
    page.goto(f"{server}/#/run/doesnotexist")
    page.wait_for_selector(".error:has-text('doesnotexist')")
    assert "runstream.Api" not in page.inner_text(".error")
    assert page.locator("a:has-text('all projects')").count() == 1
    shot(page, "15-unknown-run")

    page.goto(f"{server}/#/run/r000abc")
    page.wait_for_selector(".chart-card")
    page.fill('input[type="search"]', "[")
    page.wait_for_selector(".error:has-text('invalid regular expression')")
    page.click("button[data-tab='alerts']")
    page.goto(f"{server}/#/run/{ui_seed.NAN_RUN}")
    page.wait_for_selector("button[data-tab='charts'].active")

    # Alerts: the run by name, a user alert is a one-off, no webhooks file: "no webhooks".
    page.goto(f"{server}/#/alerts")
    page.wait_for_selector("table.data tbody tr")
    text = page.inner_text("table.data tbody")
    nan_name = next(r.name for r in ui_seed.seed_runs() if r.run_id == ui_seed.NAN_RUN)
    assert nan_name in text and "one-off" in text and "no webhooks" in text
    assert page.locator("tbody .status.running").count() == 0
    shot(page, "17-alerts")


def test_pages_fit_a_phone_and_a_long_name_wraps(page: Any, server: str) -> None:
    """Findings 5, 6 and 7 (issue 13): at 375 px no page is wider than the screen (the runs
    table scrolls inside its card, with the box and the name kept in view); the chosen columns
    come before the fixed ones."""
    context = page.context.browser.new_context(viewport={"width": 375, "height": 800})
    phone = context.new_page()
    try:
        for route, ready in (
            ("#/", ".project-card"),
            (f"#/p/{ui_seed.PROJECT}", "tbody tr[data-run]"),
            ("#/run/r000abc", ".chart-card .u-over"),
            ("#/compare?runs=r000abc,r001abc", ".chart-card"),
            ("#/sql", ".result-meta:has-text('rows')"),
            ("#/alerts", "table.data tbody tr"),
        ):
            phone.goto(f"{server}/{route}")
            phone.wait_for_selector(ready)
            phone.wait_for_timeout(300)
            width = phone.evaluate("() => document.documentElement.scrollWidth")
            wide = phone.evaluate(
                "() => [...document.querySelectorAll('body *')]"
                ".filter(e => e.getBoundingClientRect().right > 376)"
                ".slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' +"
                " Math.round(e.getBoundingClientRect().right))"
            )
            assert width <= 375, (route, width, wide)
            if route.startswith("#/run/"):
                phone.screenshot(path=str(ARTIFACTS / "16-phone-run.png"))
            if route.startswith("#/p/"):
                phone.screenshot(path=str(ARTIFACTS / "16-phone-runs.png"))
                heads = phone.eval_on_selector_all("thead th", "ths => ths.map(t => t.title)")
                assert heads[1] == "name" and heads.index("group") > heads.index("status") + 1
    finally:
        context.close()


def test_requests_are_served_side_by_side(server: str) -> None:
    """Finding 4 (issue 13): the app answers requests at once, not one after another (sync
    endpoints in Starlette's thread pool, an Api or Reader per thread: app.py). Four queries
    that each wait 0.5 s in ClickHouse take far less than 2 s together."""
    import urllib.parse
    import urllib.request

    url = f"{server}/api/sql?" + urllib.parse.urlencode({"q": "SELECT sleep(0.5)"})

    def one() -> None:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200

    one()  # the pool's first Reader connects
    threads = [threading.Thread(target=one) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started < 1.6


def test_system_metrics_in_units_and_histogram_axes(page: Any, server: str) -> None:
    """Findings 11 and 19 (issue 13): a bytes metric's axis is in binary units; time ticks are
    24-hour UTC; the histogram strip says its steps and values."""
    page.goto(f"{server}/#/run/r000abc")
    page.click("button[data-tab='system']")
    drawn(page, "proc.rss_bytes")
    # The axes' own label functions (the ticks are drawn on a canvas).
    y, x = page.evaluate(
        "() => { const c = [...window.__runstreamCharts].find(c => c.name === 'proc.rss_bytes'"
        " && c.container.isConnected); return [c.u.axes[1].values(c.u, [1288490188.8], 1, 50, 1e8),"
        " c.u.axes[0].values(c.u, [1764500400], 0, 50, 60)]; }"
    )
    assert y == ["1.20 GiB"] and x == ["11:00"], (y, x)  # ticks 0.09 GiB apart
    # Ticks closer than the rounding: as many decimals as their step needs.
    close = page.evaluate(
        "() => [...window.__runstreamCharts].find(c => c.name === 'proc.rss_bytes'"
        " && c.container.isConnected).u.axes[1].values(null, [1.1 * 2 ** 30, 1.12 * 2 ** 30],"
        " 1, 50, 0.02 * 2 ** 30)"
    )
    assert close == ["1.10 GiB", "1.12 GiB"], close
    shot(page, "18-run-system")
    page.click("button[data-tab='histograms']")
    page.wait_for_selector(".hist-axes")
    axes = page.inner_text(".hist-axes")
    assert "step 0" in axes and "step 1,600" in axes and "values" in axes
    shot(page, "19-run-histograms")
    page.click("button[data-tab='charts']")
