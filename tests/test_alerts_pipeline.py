"""Alerts end to end on the real broker: events -> processors -> alerts topic -> notifier ->
a webhook receiver on loopback -> delivery state in ClickHouse."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from runstream.processors.alert import Alert, alert_id, utcnow
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

    webhook = Webhook(
        url=receiver.url, secret=SECRET, backoff_base=0.05, backoff_max=0.2, allow_private=True
    )
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


# --- the notifier as a pipeline: no head-of-line blocking, ordered commits ---------------------


class GatedReceiver:
    """A webhook endpoint that answers 200 at once, except to the requests ``held`` picks (by
    path and Idempotency-Key): those are answered only once ``release`` is set."""

    def __init__(self, held: Callable[[str, str], bool]) -> None:
        self.release = threading.Event()
        self.received: dict[str, float] = {}  # Idempotency-Key -> when (monotonic)
        self.answered: dict[str, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                receiver.received[key] = time.monotonic()
                if held(self.path, key):
                    receiver.release.wait(30)
                self.send_response(200)
                self.end_headers()
                receiver.answered[key] = time.monotonic()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def pending_alert(run_id: str, project: str) -> Alert:
    return Alert(
        alert_id=alert_id("loss-nan", project, run_id, "loss", 0),
        rule="loss-nan",
        project=project,
        run_id=run_id,
        metric="loss",
        value=float("nan"),
        step=3,
        level="error",
        title="loss is NaN",
        fired_at=datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc),
    )


def publish(settings: Settings, *placed: tuple[Alert, int]) -> None:
    """Alerts onto the alerts topic, each in the partition given with it."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for alert, partition in placed:
        producer.produce(
            Topics(settings.topic_prefix).alerts,
            alert.to_json(),
            alert.run_id.encode(),
            partition=partition,
        )
    assert producer.flush(30) == 0


def poll_until(notifier: Notifier, done: Callable[[], bool], timeout: float, what: str) -> int:
    """Polls as ``run`` does until ``done()``; returns the deliveries the polls recorded."""
    recorded = 0
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        recorded += notifier.poll(0.1)
    return recorded


def slow_and_fast_routes(receiver: GatedReceiver) -> list[Route]:
    slow = Webhook(f"{receiver.url}/slow", timeout=60, max_attempts=1, allow_private=True)
    fast = Webhook(f"{receiver.url}/fast", timeout=5, max_attempts=1, allow_private=True)
    return [Route(slow, projects=frozenset({"slow"})), Route(fast, projects=frozenset({"fast"}))]


def delivery_updates(settings: Settings) -> list[dict[str, Any]]:
    """The notifier's records of deliveries that ended (not those that started)."""
    topic = Topics(settings.topic_prefix).alert_deliveries
    return [r for _, r in topic_records(settings, topic) if r["state"] != "delivering"]


def test_a_slow_webhook_does_not_hold_back_the_alerts_behind_it(settings: Settings) -> None:
    receiver = GatedReceiver(lambda path, key: path == "/slow")
    notifier = Notifier(settings, routes=slow_and_fast_routes(receiver))
    slow, fast = pending_alert("r-slow", "slow"), pending_alert("r-fast", "fast")
    try:
        # Same partition, the slow one first: the order the old poll-then-wait-for-all
        # blocked on.
        publish(settings, (slow, 0), (fast, 0))
        recorded = poll_until(notifier, lambda: len(receiver.received) == 2, 30, "both sent")
        started = max(receiver.received.values())
        recorded += poll_until(notifier, lambda: notifier.stats.delivered == 1, 1, "fast")
        assert time.monotonic() - started < 1.0
        assert f"{fast.alert_id}:fired" in receiver.answered
        assert f"{slow.alert_id}:fired" not in receiver.answered  # still in flight
        assert recorded == notifier.stats.deliveries == 1

        receiver.release.set()
        recorded += poll_until(notifier, lambda: notifier.stats.delivered == 2, 10, "slow")
        assert recorded == notifier.stats.deliveries == 2
        assert notifier.stats.alerts == 2 and notifier.stats.failed == 0
    finally:
        notifier.close()
        receiver.close()
    updates = delivery_updates(settings)
    assert sorted(u["alert_id"] for u in updates) == sorted([slow.alert_id, fast.alert_id])
    assert all(u["state"] == "delivered" for u in updates)


def test_offsets_are_committed_only_past_alerts_whose_deliveries_are_done(
    settings: Settings,
) -> None:
    from confluent_kafka import Consumer, TopicPartition

    topic = Topics(settings.topic_prefix).alerts
    # The notifier's group, without joining it: committed() only reads.
    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"{settings.topic_prefix}-notifier",
            "enable.auto.commit": False,
        }
    )

    def committed(partition: int) -> int:
        (found,) = reader.committed([TopicPartition(topic, partition)], timeout=10)
        return found.offset  # negative (OFFSET_INVALID) when nothing was committed

    receiver = GatedReceiver(lambda path, key: path == "/slow")
    notifier = Notifier(settings, routes=slow_and_fast_routes(receiver))
    slow = pending_alert("r-slow", "slow")
    try:
        # Partition 0: the slow alert at offset 0, a fast one at 1; partition 1: a fast one.
        publish(
            settings,
            (slow, 0),
            (pending_alert("r-fast", "fast"), 0),
            (pending_alert("r-other", "fast"), 1),
        )
        poll_until(notifier, lambda: notifier.stats.delivered == 2, 30, "both fast ones")
        poll_until(notifier, lambda: committed(1) >= 1, 10, "partition 1 committed")
        # Offset 1 of partition 0 is delivered, but the slow offset 0 before it is not.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            notifier.poll(0.1)
        assert committed(0) < 1
        assert f"{slow.alert_id}:fired" not in receiver.answered

        receiver.release.set()
        poll_until(notifier, lambda: committed(0) >= 2, 10, "partition 0 committed")
        assert notifier.stats.delivered == 3
        # Committed only once the delivery state of the slow alert was in Kafka.
        assert slow.alert_id in {u["alert_id"] for u in delivery_updates(settings)}
    finally:
        notifier.close()
        receiver.close()
        reader.close()


def test_a_resolve_during_the_delivery_of_the_fired_version_is_kept(settings: Settings) -> None:
    receiver = GatedReceiver(lambda path, key: key.endswith(":fired"))
    webhook = Webhook(receiver.url, timeout=60, max_attempts=1, allow_private=True)
    notifier = Notifier(settings, routes=[Route(webhook)])
    fired = pending_alert("r1", "vision")
    try:
        publish(settings, (fired, 0))
        poll_until(notifier, lambda: len(receiver.received) == 1, 30, "fired version sent")
        resolved = fired.model_copy(update={"resolved_at": utcnow(), "updated_at": utcnow()})
        publish(settings, (resolved, 0))
        poll_until(notifier, lambda: notifier.stats.delivered == 1, 10, "resolve delivered")
        receiver.release.set()
        poll_until(notifier, lambda: notifier.stats.delivered == 2, 10, "fired delivered")
    finally:
        notifier.close()
        receiver.close()
    # Delivery state goes to its own topic, per event and webhook: the alert's versions on the
    # alerts topic are the processors' alone, so no delivery record can undo the resolve.
    updates = delivery_updates(settings)
    assert sorted((u["event"], u["state"]) for u in updates) == [
        ("fired", "delivered"),
        ("resolved", "delivered"),
    ]
    assert [a["resolved_at"] is not None for a in alerts_on_topic(settings)] == [False, True]


class CommitSpy:
    """The notifier's consumer, noting the offsets it commits."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.committed: list[tuple[int, int]] = []  # (partition, offset)

    def commit(self, **kwargs: Any) -> Any:
        self.committed += [(tp.partition, tp.offset) for tp in kwargs.get("offsets") or []]
        return self.consumer.commit(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)


def test_a_partition_taken_away_mid_delivery_is_not_committed_by_its_former_owner(
    settings: Settings,
) -> None:
    receiver = GatedReceiver(lambda path, key: True)
    routes = [Route(Webhook(receiver.url, timeout=60, max_attempts=1, allow_private=True))]
    first = Notifier(settings, routes=routes)
    spy = CommitSpy(first.consumer)
    first.consumer = spy
    second: Notifier | None = None
    published = [pending_alert(f"r{partition}", "vision") for partition in range(3)]
    try:
        publish(settings, *((alert, p) for p, alert in enumerate(published)))
        poll_until(first, lambda: len(receiver.received) == 3, 30, "all three sent")
        # A second notifier joins: the group rebalances while all three are in flight.
        second = Notifier(settings, routes=routes)
        deadline = time.monotonic() + 30
        while not (first.consumer.assignment() and second.consumer.assignment()):
            assert time.monotonic() < deadline, "no rebalance within 30s"
            first.poll(0.05)
            second.poll(0.05)
        moved = {tp.partition for tp in second.consumer.assignment()}
        kept = {tp.partition for tp in first.consumer.assignment()}
        assert moved and kept and not moved & kept

        receiver.release.set()
        # The former owner still records what it had in flight; the new owner delivers the moved
        # alerts again (the receiver dedups by Idempotency-Key) and commits them.
        deadline = time.monotonic() + 30
        while not (first.stats.delivered >= 3 and second.stats.delivered >= len(moved)):
            assert time.monotonic() < deadline, "deliveries not recorded within 30s"
            first.poll(0.05)
            second.poll(0.05)
    finally:
        receiver.close()
        first.close()
        if second is not None:
            second.close()
    assert not {partition for partition, _ in spy.committed} & moved, spy.committed
    assert {partition for partition, _ in spy.committed} >= kept


def test_too_many_uncommitted_alerts_pause_consumption(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runstream.processors import notifier as notifier_module

    monkeypatch.setattr(notifier_module, "MAX_UNCOMMITTED", 3)
    receiver = GatedReceiver(lambda path, key: True)
    webhook = Webhook(receiver.url, timeout=60, allow_private=True)
    notifier = Notifier(settings, routes=[Route(webhook)])
    try:
        publish(settings, *((pending_alert(f"a{i}", "vision"), 0) for i in range(3)))
        poll_until(notifier, lambda: len(receiver.received) == 3, 30, "the first three sent")
        publish(settings, *((pending_alert(f"b{i}", "vision"), 0) for i in range(3)))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            notifier.poll(0.1)
        assert len(receiver.received) == 3 and notifier.stats.alerts == 3  # paused

        receiver.release.set()
        poll_until(notifier, lambda: notifier.stats.delivered == 6, 30, "all six delivered")
        assert len(receiver.received) == 6
    finally:
        notifier.close()
        receiver.close()
