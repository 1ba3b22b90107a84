"""Issue 10, item 12: no webhook can delay, stop or misuse the notifier.

A silent receiver delays no delivery to a healthy one; a bad entry in the webhooks file is
skipped with one error; a webhook aimed at the stack's own ClickHouse is refused; the delivery
state of every webhook is visible per alert. Real receivers on loopback (hence allow_private),
the shared Kafka and ClickHouse.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from runstream.errors import SettingsError
from runstream.processors.notifier import Notifier, Route
from runstream.processors.webhook_config import load_webhooks, parse_webhooks
from runstream.processors.webhooks import Webhook, WebhookURLError, deliver
from runstream.schemas import Topics
from runstream.settings import Settings
from tests.helpers import records_of, scalar, sink_until, topic_records
from tests.test_alerts_pipeline import pending_alert, poll_until, publish

PUBLIC = "http://93.184.215.14/hook"  # a public address, never contacted by these tests


class Recorder:
    """A webhook endpoint answering ``status`` at once; notes when each key arrived."""

    def __init__(self, status: int = 200) -> None:
        self.received: dict[str, float] = {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                recorder.received.setdefault(self.headers["Idempotency-Key"], time.monotonic())
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Silent:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.connections.append(self.listener.accept()[0])

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def committed(settings: Settings, partition: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"{settings.topic_prefix}-notifier",
        }
    )
    try:
        topic = Topics(settings.topic_prefix).alerts
        (found,) = reader.committed([TopicPartition(topic, partition)], timeout=10)
        return int(found.offset)
    finally:
        reader.close()


def deliveries_on_topic(settings: Settings) -> list[dict[str, Any]]:
    topic = Topics(settings.topic_prefix).alert_deliveries
    return [record for _, record in topic_records(settings, topic)]


# --- a silent webhook delays no other ----------------------------------------------------------


@pytest.mark.integration
def test_a_silent_webhook_delays_no_delivery_to_a_healthy_one(
    settings: Settings, recorder: Recorder
) -> None:
    silent = Silent()
    timeout = 3.0
    silent_hook = Webhook(f"http://127.0.0.1:{silent.port}/", name="silent", timeout=timeout,
                          max_attempts=1, concurrency=10, queue_limit=10,
                          allow_private=True)  # fmt: skip
    healthy_hook = Webhook(recorder.url, name="healthy", timeout=timeout, allow_private=True)
    notifier = Notifier(settings, routes=[Route(silent_hook), Route(healthy_hook)])
    alerts = [pending_alert(f"r{i}", "vision") for i in range(40)]
    try:
        poll_until(notifier, lambda: bool(notifier.consumer.assignment()), 30, "assigned")
        published = time.monotonic()
        publish(settings, *((alert, 0) for alert in alerts))
        poll_until(notifier, lambda: len(recorder.received) == len(alerts), 10, "healthy got all")
        # 40 silent deliveries would have held a shared pool of 16 threads for 3 s each.
        latencies = sorted(at - published for at in recorder.received.values())
        assert latencies[-1] < 2.0, latencies
        # The silent webhook's deliveries are still under way: nothing is committed past them.
        assert notifier.stats.webhooks["silent"].delivered == 0
        assert committed(settings, 0) < 1

        poll_until(notifier, lambda: notifier.stats.deliveries == 2 * len(alerts), 3 * timeout,
                   "the silent webhook's deliveries ended")  # fmt: skip
        poll_until(notifier, lambda: committed(settings, 0) == len(alerts), 10, "all committed")
    finally:
        notifier.close()
        silent.close()
    assert notifier.stats.webhooks["healthy"].delivered == len(alerts)
    silent_stats = notifier.stats.webhooks["silent"]
    # Its queue holds 10: those waited out their deadline, the rest were refused at once, and
    # every one is recorded as failed with the reason, and dead-lettered with its payload.
    assert (silent_stats.accepted, silent_stats.refused_full, silent_stats.failed) == (10, 30, 10)
    final = [r for r in deliveries_on_topic(settings) if r["state"] != "delivering"]
    errors = sorted(r["last_error"] for r in final if r["webhook"] == "silent")
    assert errors.count(f"timed out after {timeout}s") == 10
    assert all(
        e.startswith("not attempted: the queue of webhook silent is full") for e in errors[:30]
    )
    assert {r["state"] for r in final if r["webhook"] == "healthy"} == {"delivered"}
    dead = [r for _, r in topic_records(settings, Topics(settings.topic_prefix).dead_letters)]
    assert sorted(d["payload"]["alert_id"] for d in dead) == sorted(a.alert_id for a in alerts)


# --- delivery state per webhook ------------------------------------------------------------------


@pytest.mark.integration
def test_two_webhooks_one_failing_each_state_is_visible_in_clickhouse(
    settings: Settings, recorder: Recorder
) -> None:
    failing = Recorder(status=500)
    routes = [
        Route(Webhook(recorder.url, name="good", allow_private=True)),
        Route(
            Webhook(
                failing.url,
                name="bad",
                max_attempts=2,
                backoff_base=0.05,
                backoff_max=0.1,
                allow_private=True,
            )
        ),
    ]
    notifier = Notifier(settings, routes=routes)
    alert = pending_alert("r1", "vision")
    try:
        publish(settings, (alert, 0))
        poll_until(notifier, lambda: notifier.stats.deliveries == 2, 30, "both ended")
        poll_until(notifier, lambda: committed(settings, 0) == 1, 10, "committed")
    finally:
        notifier.close()
        failing.close()
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: c.query(f"SELECT count() FROM {db}.alert_deliveries_current WHERE state != "
                          "'delivering'").result_rows[0][0] == 2
        and c.query(f"SELECT count() FROM {db}.alerts").result_rows[0][0] == 1,
    )  # fmt: skip
    (row,) = records_of(settings, f"SELECT * FROM {db}.alerts_current")
    assert row["alert_id"] == alert.alert_id
    assert row["delivery_state"] == "failed"  # one of them failed
    assert row["attempts"] == 3
    assert row["last_error"] == f"bad: HTTP 500 from {failing.url}"
    by_webhook = {d["webhook"]: d for d in row["deliveries"]}
    assert set(by_webhook) == {"good", "bad"}
    good, bad = by_webhook["good"], by_webhook["bad"]
    assert (good["state"], good["attempts"], good["status"], good["last_error"]) == (
        "delivered", 1, 200, "",
    )  # fmt: skip
    assert good["delivered_at"] is not None
    assert (bad["state"], bad["attempts"], bad["status"]) == ("failed", 2, 500)
    assert bad["delivered_at"] is None and bad["last_error"].startswith("HTTP 500")
    per_row = records_of(
        settings,
        f"SELECT webhook, event, state FROM {db}.alert_deliveries_current ORDER BY webhook",
    )
    assert per_row == [
        {"webhook": "bad", "event": "fired", "state": "failed"},
        {"webhook": "good", "event": "fired", "state": "delivered"},
    ]


# --- a webhook aimed at the stack's own ClickHouse -------------------------------------------


@pytest.mark.integration
def test_a_webhook_to_clickhouse_is_refused_and_inserts_nothing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runstream.sinks.clickhouse import connect

    db = settings.clickhouse_database
    connect(settings).command(
        f"CREATE TABLE {db}.stolen (alert_id String) ENGINE = MergeTree ORDER BY alert_id"
    )
    query = quote(f"INSERT INTO {db}.stolen FORMAT JSONEachRow")
    url = f"{settings.clickhouse_url}/?query={query}&input_format_skip_unknown_fields=1"
    alert = pending_alert("r1", "vision")
    # The danger is real: allowed, the alert's JSON becomes a row.
    assert deliver(Webhook(url, allow_private=True), alert).delivered
    assert scalar(settings, f"SELECT count() FROM {db}.stolen") == 1

    # Refused at configuration, by address and by a name that resolves to it...
    with pytest.raises(WebhookURLError, match="loopback"):
        Webhook(url)
    with pytest.raises(WebhookURLError, match="loopback"):
        Webhook(url.replace("127.0.0.1", "localhost"))
    # ... in the webhooks file, as a skipped entry ...
    path = tmp_path / "webhooks.toml"
    path.write_text(f'[[webhook]]\nurl = "{url}"\n')
    found = load_webhooks(path)
    assert found.routes == [] and len(found.problems) == 1
    assert "webhook #1" in found.problems[0] and "loopback" in found.problems[0]
    # ... and at send time, when the name pointed elsewhere while the webhook was defined.
    port = int(settings.clickhouse_url.rsplit(":", 1)[1].strip("/"))
    answer = {"address": "93.184.215.14"}

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer["address"], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    rebound = Webhook(url.replace("127.0.0.1", "rebound.example"))
    answer["address"] = "127.0.0.1"
    result = deliver(rebound, alert)
    assert result.dead_letter and result.attempts == 1
    assert "refused" in result.error and "loopback" in result.error
    assert scalar(settings, f"SELECT count() FROM {db}.stolen") == 1  # nothing more


# --- bad entries in the webhooks file ----------------------------------------------------------

GOOD_OPTIONS: dict[str, Any] = {
    "secret": st.text(min_size=1, max_size=8),
    "format": st.sampled_from(["runstream", "slack"]),
    "timeout": st.floats(0.1, 60),
    "max_attempts": st.integers(1, 10),
    "allow_private": st.booleans(),
    "levels": st.sets(st.sampled_from(["info", "warn", "error"])).map(sorted),
    "projects": st.lists(st.text(max_size=5), max_size=2),
    "concurrency": st.integers(1, 8),
    "queue_limit": st.integers(1, 5000),
    "headers": st.just({"Authorization": "Bearer x"}),
}
# Each breaks an entry in one way: what it sets (or None to drop the url).
BAD = st.sampled_from(
    [
        {"url": None},
        {"url": "ftp://93.184.215.14/"},
        {"url": "file:///etc/passwd"},
        {"url": 42},
        {"url": "http://127.0.0.1:8123/", "allow_private": False},
        {"url": "http://[::ffff:10.0.0.1]/", "allow_private": False},
        {"url": "http://169.254.169.254/", "allow_private": False},
        {"url": "http://93.184.215.14:99999/"},
        {"timeout": "5"},
        {"timeout": -1},
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"allow_private": "yes"},
        {"format": "teams"},
        {"secret": ""},
        {"secret": 12345},
        {"levels": ["critical"]},
        {"levels": "error"},
        {"projects": [1, 2]},
        {"headers": ["x"]},
        {"headers": {"Content-Type": "text/plain"}},
        {"concurrency": 0},
        {"queue_limit": "many"},
        {"retries": 3},
        {"urls": "http://93.184.215.14/"},
    ]
)


@st.composite
def entries(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A webhook entry as TOML would parse it, and whether it is good."""
    entry: dict[str, Any] = {"url": f"{PUBLIC}/{draw(st.integers(0, 3))}"}
    for key in draw(st.sets(st.sampled_from(sorted(GOOD_OPTIONS)), max_size=4)):
        entry[key] = draw(GOOD_OPTIONS[key])
    if draw(st.booleans()):
        return entry, True
    for key, value in draw(BAD).items():
        if value is None:
            entry.pop(key)
        else:
            entry[key] = value
    return entry, False


@given(st.lists(entries(), max_size=6))
@hsettings(max_examples=150, deadline=None)
def test_a_bad_entry_is_skipped_with_one_error_and_the_good_ones_load(
    drawn: list[tuple[dict[str, Any], bool]],
) -> None:
    found = parse_webhooks({"webhook": [entry for entry, _ in drawn]}, "webhooks.toml")
    good = [entry for entry, ok in drawn if ok]
    assert [route.webhook.url for route in found.routes] == [entry["url"] for entry in good]
    bad = [index for index, (_, ok) in enumerate(drawn, start=1) if not ok]
    assert len(found.problems) == len(bad)
    for index, problem in zip(bad, found.problems, strict=True):
        assert problem.startswith(f"webhooks.toml: webhook #{index}") and problem.endswith(
            "skipped"
        )
    names = [route.webhook.name for route in found.routes]
    assert len(set(names)) == len(names)  # they key the delivery state


def test_the_problems_say_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.toml"
    path.write_text(
        f"""
[[webhook]]
url = "{PUBLIC}"
name = "ok"

[[webhook]]
secret = "no url"

[[webhook]]
url = "http://user:hunter2@10.1.2.3/hook?token=abc"

[[webhook]]
url = "{PUBLIC}"
timeout = "5 s"

[[webhook]]
url = "{PUBLIC}"
retries = 3

[[webhook]]
url = "{PUBLIC}"
name = "ok"
"""
    )
    found = load_webhooks(path)
    assert [route.webhook.name for route in found.routes] == ["ok"]
    assert found.problems == [
        f"{path}: webhook #2: no url; skipped",
        f"{path}: webhook #3 (http://10.1.2.3/…?…): webhook host '10.1.2.3' is a private address; "
        "set allow_private = true on the webhook if it is meant to reach this address; skipped",
        f"{path}: webhook #4 (http://93.184.215.14/…): webhook timeout must be > 0 seconds, "
        "got '5 s'; skipped",
        f"{path}: webhook #5 (http://93.184.215.14/…): unknown key(s) retries (known: "
        "allow_private, backoff_base, backoff_max, concurrency, format, headers, levels, "
        "max_attempts, name, projects, queue_limit, secret, timeout, url); skipped",
        f"{path}: webhook #6 ('ok'): name 'ok' is already used by another webhook; skipped "
        "(names must be unique: they key the delivery state)",
    ]
    assert not any("hunter2" in p or "abc" in p for p in found.problems)


def test_a_file_that_is_not_toml_stops_the_notifier_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.toml"
    path.write_text("[[webhook]\nurl = ")
    with pytest.raises(SettingsError, match="cannot read webhooks from"):
        load_webhooks(path)


@pytest.mark.integration
def test_the_notifier_starts_with_a_bad_entry_and_delivers_to_the_others(
    settings: Settings, recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "webhooks.toml"
    path.write_text(
        f'[[webhook]]\nurl = "{recorder.url}"\nallow_private = true\n\n'
        f'[[webhook]]\nurl = "{PUBLIC}"\ntimeout = "fast"\n'
    )
    with caplog.at_level(logging.ERROR, logger="runstream.notifier"):
        notifier = Notifier(settings.model_copy(update={"webhooks": path}))
    try:
        assert len(notifier.routes) == 1
        (problem,) = notifier.stats.problems
        assert "webhook #2" in problem and "timeout" in problem
        assert [r.getMessage() for r in caplog.records] == [problem]
        alert = pending_alert("r1", "vision")
        publish(settings, (alert, 0))
        poll_until(notifier, lambda: notifier.stats.delivered == 1, 30, "delivered")
        assert f"{alert.alert_id}:fired" in recorder.received
    finally:
        notifier.close()


def test_notifier_check_lists_the_webhooks_and_each_bad_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runstream import cli

    path = tmp_path / "webhooks.toml"
    path.write_text(
        f'[[webhook]]\nurl = "{PUBLIC}"\nname = "on-call"\nsecret = "s"\nlevels = ["error"]\n\n'
        '[[webhook]]\nurl = "http://127.0.0.1:8123/"\n'
    )
    monkeypatch.setenv("RUNSTREAM_WEBHOOKS", str(path))
    assert cli.main(["notifier", "--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ok       on-call ({PUBLIC}, runstream, signed; levels error)"
    assert out[1].startswith(f"error    {path}: webhook #2 (http://127.0.0.1:8123/): ")
    assert "loopback" in out[1] and len(out) == 2

    path.write_text(f'[[webhook]]\nurl = "{PUBLIC}"\n')
    assert cli.main(["notifier", "--check"]) == 0
