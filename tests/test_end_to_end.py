"""One run flowing for real: SDK -> Kafka -> sink -> ClickHouse -> SQL."""

from __future__ import annotations

import math

import orjson
import pytest
from confluent_kafka import Consumer, Producer

import runstream
from runstream.cli import main
from runstream.schemas import EVENT_MODELS, Topics, decode, encode
from runstream.settings import Settings
from tests.helpers import rows, scalar, sink_until
from tests.samples import same, sample_event

pytestmark = pytest.mark.integration

STEPS = 1_000
METRICS = ("loss", "accuracy", "lr", "grad/norm", "val/loss")


def test_a_run_of_1000_steps_lands_exactly_once(settings: Settings) -> None:
    db = settings.clickhouse_database
    run = runstream.init(
        project="e2e",
        config={"lr": 0.1, "layers": [1, 2]},
        settings=settings.with_overrides(system_metrics_interval=0, heartbeat_interval=3600),
    )
    for step in range(STEPS):
        run.log(
            {
                "loss": 1 / (step + 1),
                "accuracy": step / STEPS,
                "lr": 0.1,
                "grad": {"norm": float(step)},
                "val/loss": math.nan if step == 500 else 2.0,
            },
            step=step,
        )
    result = run.finish()
    assert result.ok, result
    # started, the steps, finished: no explicit summary key, so no final summary_updated (the
    # summaries derived from the points are computed in ClickHouse)
    assert result.produced == STEPS + 2

    expected_points = STEPS * len(METRICS)
    sink = sink_until(
        settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= STEPS + 2
    )
    assert sink.stats.dead_letters == 0

    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == expected_points
    per_name = dict(rows(settings, f"SELECT name, count() FROM {db}.metrics GROUP BY name"))
    assert per_name == dict.fromkeys(METRICS, STEPS)
    assert rows(
        settings,
        f"SELECT min(step), max(step), uniqExact(step) FROM {db}.metrics WHERE name='loss'",
    ) == [(0, STEPS - 1, STEPS)]
    assert rows(settings, f"SELECT step FROM {db}.metrics WHERE isNaN(value)") == [(500,)]

    types = dict(rows(settings, f"SELECT type, count() FROM {db}.events GROUP BY type"))
    assert types == {
        "run_started": 1,
        "metrics_logged": STEPS,
        "run_finished": 1,
    }
    seqs = [r[0] for r in rows(settings, f"SELECT seq FROM {db}.events ORDER BY seq")]
    assert seqs == list(range(STEPS + 2)), "per-run sequence numbers must be gap-free"
    started = orjson.loads(
        scalar(settings, f"SELECT body FROM {db}.events WHERE type='run_started'")
    )
    assert started["config"] == {"lr": 0.1, "layers": [1, 2]}
    assert scalar(settings, f"SELECT uniqExact(event_id) FROM {db}.events") == STEPS + 2
    last = f"SELECT argMax(value, step) FROM {db}.metrics WHERE name="
    assert scalar(settings, last + "'loss'") == 1 / STEPS
    assert scalar(settings, last + "'grad/norm'") == STEPS - 1

    # A second sink in the same group finds nothing left: offsets were committed after the insert.
    again = sink_until(settings, lambda c: True)
    assert again.stats.events == 0
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == expected_points


def test_every_event_type_round_trips_through_kafka_and_clickhouse(settings: Settings) -> None:
    topic = Topics(settings.topic_prefix).events
    sent = {
        name: sample_event(name, seq=i, run_id="types")
        for i, name in enumerate(sorted(EVENT_MODELS))
    }
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for event in sent.values():
        producer.produce(topic, key=b"types", value=encode(event))
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    received = {}
    for _ in range(100):
        for message in consumer.consume(50, timeout=0.5):
            if message.error() is None:
                event = decode(message.value())
                received[event.type] = event  # type: ignore[attr-defined]
        if len(received) == len(sent):
            break
    consumer.close()
    assert set(received) == set(sent)
    for name, event in received.items():
        assert same(
            orjson.loads(event.model_dump_json())["body"], _json_body(sent[name]["body"])
        ), name

    db = settings.clickhouse_database
    sink_until(
        settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") == len(sent)
    )
    stored = dict(rows(settings, f"SELECT type, body FROM {db}.events"))
    for name, body in stored.items():
        assert same(orjson.loads(body), sent[name]["body"]), name
    assert rows(
        settings, f"SELECT name FROM {db}.metrics WHERE isInfinite(value) ORDER BY name"
    ) == [
        ("grad/min",),
        ("grad/norm",),
    ]
    assert scalar(settings, f"SELECT count() FROM {db}.metrics WHERE name = '损失/验证'") == 1


def _json_body(body: dict[str, object]) -> object:
    return orjson.loads(orjson.dumps(body))


def test_malformed_messages_go_to_the_dead_letter_topic_and_good_ones_land(
    settings: Settings,
) -> None:
    topics = Topics(settings.topic_prefix)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    bad_event = sample_event("metrics_logged", seq=1, run_id="mixed")
    bad_event["body"]["metrics"] = {"loss": "very high"}
    # A key twice: refused by the shared decode (docs/schemas.md), not left to ClickHouse.
    twice = encode(sample_event("metrics_logged", seq=3, run_id="mixed"))
    twice = twice.replace(b'"seq":3', b'"seq":3,"seq":3')
    future = sample_event("metrics_logged", seq=5, run_id="mixed")
    future["ts"] = "2300-01-01T00:00:00Z"
    payloads = [
        encode(sample_event("run_started", seq=0, run_id="mixed")),
        b"\xff\xfe not json",
        encode(bad_event),
        twice,
        encode(sample_event("metrics_logged", seq=4, run_id="mixed")),
        encode(future),
        encode(sample_event("run_finished", seq=6, run_id="mixed")),
    ]
    for value in payloads:
        producer.produce(topics.events, key=b"mixed", value=value)
    assert producer.flush(30) == 0

    db = settings.clickhouse_database
    sink = sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") == 3)
    assert sink.stats.dead_letters == 4
    assert rows(settings, f"SELECT seq FROM {db}.events ORDER BY seq") == [(0,), (4,), (6,)]
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == len(
        sample_event("metrics_logged")["body"]["metrics"]
    )

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "dlq",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topics.dead_letters])
    letters = []
    for _ in range(60):
        letters += [m for m in consumer.consume(10, timeout=0.5) if m.error() is None]
        if len(letters) >= 4:
            break
    consumer.close()
    reasons = {m.value(): dict(m.headers())["runstream.reason"].decode() for m in letters}
    assert len(letters) == 4
    assert reasons[payloads[1]].startswith("not valid JSON")
    assert reasons[payloads[2]].startswith("body.metrics.loss")
    assert reasons[payloads[3]] == "duplicate key 'seq' in the event"
    assert reasons[payloads[5]] == "ts: outside the range ClickHouse stores (1900-2299)"


def test_query_command_prints_table_csv_and_json(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--clickhouse", settings.clickhouse_url, "--database", settings.clickhouse_database]
    sql = "SELECT number AS n, toString(number) AS s, nan AS v FROM numbers(3)"
    assert main(["query", sql, "--format", "table", *args]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split("|")[0].strip() == "n"
    assert "(3 rows)" in table
    assert main(["query", sql, "--format", "csv", *args]) == 0
    assert capsys.readouterr().out.splitlines() == ["n,s,v", "0,0,nan", "1,1,nan", "2,2,nan"]
    assert main(["query", sql, "--format", "json", *args]) == 0
    assert orjson.loads(capsys.readouterr().out)[2] == {"n": 2, "s": "2", "v": "NaN"}
    assert main(["query", "SELEC oops", *args]) == 2  # not a read statement: never sent
    assert "refused" in capsys.readouterr().err
    assert main(["query", "SELECT oops(", *args]) == 1
    assert "ClickHouse: Syntax error" in capsys.readouterr().err


def test_events_sent_again_by_a_producer_are_stored_once(settings: Settings) -> None:
    """A spool re-sent after a crash repeats sequence numbers; the sink keeps the first copy,
    whether the copies arrive in one batch or in batches of their own."""
    topic = Topics(settings.topic_prefix).events
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    first = [sample_event("heartbeat", seq=s, run_id="resent") for s in range(5)]

    def send(events: list[dict[str, object]]) -> None:
        for event in events:
            producer.produce(topic, key=b"resent", value=encode(event))
        assert producer.flush(30) == 0

    db = settings.clickhouse_database
    send(first)
    sink = sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") == 5)
    send(first[2:] + [sample_event("heartbeat", seq=s, run_id="resent") for s in (5, 6)])
    send(first[:1])
    # A new sink (a restart): it learns what is stored from ClickHouse, not from memory.
    again = sink_until(
        settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= 7
    )
    assert rows(settings, f"SELECT seq FROM {db}.events ORDER BY seq") == [(s,) for s in range(7)]
    assert sink.stats.duplicates == 0 and again.stats.duplicates == 4
