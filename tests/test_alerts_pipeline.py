"""Alerts end to end on the real broker: events -> processors -> alerts topic -> notifier ->
a webhook receiver on loopback -> delivery state in ClickHouse."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from runstream.processors.notifier import Notifier, Route
from runstream.processors.webhooks import Webhook, verify
from runstream.schemas import Topics
from runstream.settings import Settings
from tests.helpers import records_of, sink_until, topic_records
from tests.samples import sample_event
from tests.test_processors import produce, wait_for, worker

pytestmark = pytest.mark.integration

SECRET = "s3cret"
RULES = """
[[rule]]
name = "loss-nan"
kind = "nan"
metric = "loss"
level = "error"

[[rule]]
name = "loss-high"
kind = "threshold"
metric = "loss"
above = 10.0
for_steps = 2
"""


class Receiver:
    """A webhook endpoint that fails the first POST of every delivery with a 500."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                seen = [r for r in receiver.requests if r[0]["Idempotency-Key"] == key]
                status = 500 if not seen else 200
                receiver.requests.append((dict(self.headers), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> dict[str, list[tuple[dict[str, str], bytes]]]:
        """Successful deliveries by Idempotency-Key."""
        out: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        for headers, body, status in self.requests:
            if status == 200:
                out.setdefault(headers["Idempotency-Key"], []).append((headers, body))
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def metrics(run_id: str, seq: int, step: int, loss: float | str) -> dict[str, Any]:
    e = sample_event("metrics_logged", seq=seq, run_id=run_id)
    e["body"] = {"step": step, "metrics": {"loss": loss}}
    return e


def test_a_nan_fires_once_resolves_and_each_version_is_delivered_once_signed(
    settings: Settings, tmp_path: Path, receiver: Receiver
) -> None:
    rules = tmp_path / "alerts.toml"
    rules.write_text(RULES)
    events = [sample_event("run_started", seq=0, run_id="a1")]
    losses: list[float | str] = [1.0, "NaN", "NaN", 2.0, 11.0, 12.0, 13.0, 1.0]
    events += [metrics("a1", seq, seq, loss) for seq, loss in enumerate(losses, start=1)]
    produce(settings, events)

    webhook = Webhook(url=receiver.url, secret=SECRET, backoff_base=0.05, backoff_max=0.2)
    notifier = Notifier(settings, routes=[Route(webhook)])
    stop = threading.Event()
    thread = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with worker(settings, tmp_path / "w.log", RUNSTREAM_ALERT_RULES=str(rules)):
            wait_for(lambda: len(receiver.delivered()) >= 4, 90, "fired and resolved, twice")
    finally:
        stop.set()
        thread.join(30)

    delivered = receiver.delivered()
    assert all(len(copies) == 1 for copies in delivered.values()), delivered.keys()
    payloads = [orjson.loads(body) for copies in delivered.values() for _, body in copies]
    by_rule: dict[str, list[str]] = {}
    for p in payloads:
        by_rule.setdefault(p["rule"], []).append(p["event"])
    assert sorted(by_rule["loss-nan"]) == ["alert.fired", "alert.resolved"]
    assert sorted(by_rule["loss-high"]) == ["alert.fired", "alert.resolved"]
    nan = next(p for p in payloads if p["rule"] == "loss-nan" and p["event"] == "alert.fired")
    assert (nan["value"], nan["step"], nan["run_id"]) == ("NaN", 2, "a1")
    high = next(p for p in payloads if p["rule"] == "loss-high" and p["event"] == "alert.fired")
    assert high["step"] == 6  # the second step in a row above 10
    # Every POST was signed; the first of each delivery failed and was retried with the same key.
    assert len(receiver.requests) == 2 * len(delivered)
    for headers, body, _ in receiver.requests:
        assert verify(SECRET, headers["Runstream-Signature"], body)
        assert not verify("wrong secret", headers["Runstream-Signature"], body)

    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: (
            c.query(
                f"SELECT countIf(delivery_state = 'delivered' AND resolved_at IS NOT NULL) "
                f"FROM {db}.alerts_current WHERE rule != 'user'"
            ).result_rows[0][0]
            == 2
        ),
    )
    stored = records_of(settings, f"SELECT * FROM {db}.alerts_current WHERE rule != 'user'")
    assert {r["rule"] for r in stored} == {"loss-nan", "loss-high"}
    assert all(r["attempts"] == 2 for r in stored)


KINDS = """
[[rule]]
name = "acc-plateau"
kind = "plateau"
metric = "acc"
mode = "max"
patience = 3

[[rule]]
name = "loss-diverging"
kind = "divergence"
metric = "loss"
rise_pct = 50
window = 5

[[rule]]
name = "failed"
kind = "run_failed"

[[rule]]
name = "user"
kind = "user"
"""


def alerts_on_topic(settings: Settings) -> list[dict[str, Any]]:
    return [record for _, record in topic_records(settings, Topics(settings.topic_prefix).alerts)]


def test_every_rule_kind_fires_once_per_episode_and_resolves_on_the_broker(
    settings: Settings, tmp_path: Path
) -> None:
    rules = tmp_path / "alerts.toml"
    rules.write_text(KINDS)
    # acc: rises, then flat for 3 steps (plateau), then rises again (resolved);
    # loss: falls to 1.0, jumps to 2.0 (diverging: +100 % over the window's best), falls back.
    acc = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.4, 0.5]
    loss = [4.0, 2.0, 1.0, 2.0, 0.9, 0.8, 0.7, 0.6]
    events = [sample_event("run_started", seq=0, run_id="k1")]
    for step, (a, value) in enumerate(zip(acc, loss, strict=True), start=1):
        e = sample_event("metrics_logged", seq=step, run_id="k1")
        e["body"] = {"step": step, "metrics": {"acc": a, "loss": value}}
        events.append(e)
    events.append(sample_event("alert_raised", seq=9, run_id="k1"))
    failed = sample_event("run_finished", seq=10, run_id="k1")
    failed["body"] = {"exit_code": 1, "status": "failed"}
    events.append(failed)
    produce(settings, events)

    def versions() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for alert in alerts_on_topic(settings):
            out.setdefault(alert["rule"], []).append(alert)
        return out

    with worker(settings, tmp_path / "w.log", RUNSTREAM_ALERT_RULES=str(rules)):
        wait_for(lambda: {"acc-plateau", "loss-diverging", "failed", "user"} <= versions().keys(),
                 90, "every kind fired")  # fmt: skip
    found = versions()
    for rule in ("acc-plateau", "loss-diverging"):
        fired = [a for a in found[rule] if a["resolved_at"] is None]
        resolved = [a for a in found[rule] if a["resolved_at"] is not None]
        assert len(fired) == 1 and len(resolved) == 1, (rule, found[rule])
        assert fired[0]["alert_id"] == resolved[0]["alert_id"]
    assert [a["step"] for a in found["acc-plateau"] if a["resolved_at"] is None] == [6]
    assert [a["step"] for a in found["loss-diverging"] if a["resolved_at"] is None] == [4]
    assert len(found["failed"]) == 1 and found["failed"][0]["level"] == "warn"
    (user,) = found["user"]
    assert user["title"] == "Loss spiked" and user["source_seq"] == 9
