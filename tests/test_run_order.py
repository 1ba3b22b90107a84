"""A run's order (issue 10, item 1): events keyed by something else than their run id are
dead letters in the sink and the processors alike; a seq below the highest seen that was never
stored or folded (a gap filled late) is new data, and only a real re-send is left out."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from runstream.processors.aggregates import (
    LATE,
    NEW,
    SEEN,
    fold_batch,
    new_run_state,
    run_key,
    summary_key,
    take_seq,
)
from runstream.processors.decoding import decode_event
from runstream.schemas import Topics, encode
from runstream.schemas.codec import key_problem
from runstream.settings import Settings
from runstream.sinks.consumer import Sink
from runstream.sinks.dedup import add, contains
from tests.helpers import rows, scalar, sink_until
from tests.samples import sample_event


# --- pure ---------------------------------------------------------------------------------------
@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=80))
def test_intervals_hold_exactly_the_seqs_added(seqs: list[int]) -> None:
    intervals: tuple[tuple[int, int], ...] = ()
    seen: set[int] = set()
    for seq in seqs:
        assert contains(intervals, seq) == (seq in seen)
        intervals = add(intervals, seq)
        seen.add(seq)
        flat = [s for low, high in intervals for s in range(low, high + 1)]
        assert flat == sorted(seen)  # sorted, disjoint
        assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(intervals))  # not adjacent
    assert all(contains(intervals, s) == (s in seen) for s in range(-1, 62))


def test_key_problem_names_key_and_run() -> None:
    assert key_problem(b"f2-split", "f2-split") == ""
    reason = key_problem(b"x", "f2-split")
    assert reason == (
        "key 'x' is not the event's run_id 'f2-split': a run's events must be keyed by its "
        "run id (docs/schemas.md)"
    )
    assert key_problem(None, "r").startswith("no key is not the event's run_id 'r'")
    assert key_problem(b"", "r").startswith("key '' is not")


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=60))
def test_take_seq_tells_late_from_seen(seqs: list[int]) -> None:
    state = new_run_state("p", "r")
    seen: set[int] = set()
    for seq in seqs:
        taken = take_seq(state, seq)
        if seq in seen:
            assert taken == SEEN
        else:
            assert taken == (NEW if seq > max(seen, default=-1) else LATE)
        seen.add(seq)
    holes = {s for s in range(max(seen, default=-1)) if s not in seen}
    gaps = {s for low, high in state.get("gaps", []) for s in range(low, high + 1)}
    assert gaps == holes


def metrics(run_id: str, seq: int, step: int, loss: float) -> dict[str, Any]:
    event = sample_event("metrics_logged", seq=seq, run_id=run_id)
    event["body"] = {"step": step, "metrics": {"loss": loss}}
    return event


def test_a_late_seq_is_folded_into_the_summaries() -> None:
    # seqs 0,1,2,5,3,4 and re-sends of 1 and 5, over two batches; step = seq, loss = 10 - seq
    order = [0, 1, 2, 5], [3, 4, 1, 5]
    state = new_run_state("p", "r")
    summaries: dict[str, Any] = {}
    folded = 0
    for seqs in order:
        events = [decode_event(encode(metrics("r", s, s, 10.0 - s))) for s in seqs]
        done, touched = fold_batch(state, summaries, events, 0)
        folded += len(done)
        assert touched == ({"loss"} if any(s not in (1, 5) for s in seqs) else set())
    assert folded == 6
    loss = summaries["loss"]
    assert loss["count"] == 6 and loss["finite_count"] == 6
    assert (loss["min"], loss["step_of_min"], loss["max"], loss["step_of_max"]) == (5.0, 5, 10.0, 0)
    assert math.isclose(loss["mean"], sum(10.0 - s for s in range(6)) / 6)
    assert (loss["last"], loss["last_order"]) == (5.0, [5, 5])
    assert (loss["first_step"], loss["last_step"]) == (0, 5)
    assert state["last_seq"] == 5 and "gaps" not in state and state["last_step"] == 5


def test_a_late_event_of_another_type_is_counted_not_folded() -> None:
    state = new_run_state("p", "r")
    tags = sample_event("tags_updated", seq=1, run_id="r")
    events = [sample_event("run_started", seq=0, run_id="r"), metrics("r", 2, 0, 1.0), tags]
    fold_batch(state, {}, [decode_event(encode(e)) for e in events], 0)
    assert state["late_left_out"] == 1
    assert state["tags"] == sample_event("run_started", seq=0, run_id="r")["body"]["tags"]


# --- against Kafka and ClickHouse --------------------------------------------------------------
pytestmark_integration = pytest.mark.integration


def produce(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 0})
    topic = Topics(settings.topic_prefix).events
    for key, value in messages:
        producer.produce(topic, key=key, value=value, partition=0)
    assert producer.flush(30) == 0


def stored_seqs(settings: Settings, run_id: str) -> list[int]:
    db = settings.clickhouse_database
    sql = f"SELECT seq FROM {db}.events WHERE run_id = '{run_id}' ORDER BY seq"
    return [int(r[0]) for r in rows(settings, sql)]


@pytestmark_integration
def test_sink_dead_letters_events_keyed_by_something_else(settings: Settings) -> None:
    from tests.test_poison import dead_letters, headers_of

    events = [metrics("f2-split", s, s, float(s)) for s in range(10)]
    produce(
        settings,
        [(b"f2-split" if s % 2 == 0 else b"other-key", encode(e)) for s, e in enumerate(events)]
        + [(None, encode(metrics("f2-split", 10, 10, 0.0)))],
    )
    db = settings.clickhouse_database
    sink = sink_until(
        settings, lambda c: c.query(f"SELECT count() FROM {db}.events").result_rows[0][0] >= 5
    )
    assert stored_seqs(settings, "f2-split") == [0, 2, 4, 6, 8]
    assert sink.stats.dead_letters == 6
    letters = dead_letters(settings, 6)
    reasons = sorted(headers_of(m)["runstream.reason"] for m in letters)
    assert (
        reasons.count(
            "key 'other-key' is not the event's run_id 'f2-split': a run's events must be keyed by "
            "its run id (docs/schemas.md)"
        )
        == 5
    )
    assert reasons[0].startswith("key 'other-key'") and any(
        r.startswith("no key is not the event's run_id 'f2-split'") for r in reasons
    )


@pytestmark_integration
def test_sink_stores_a_gap_filled_late_and_only_drops_re_sends(settings: Settings) -> None:
    run = "gappy"
    send = lambda seqs: produce(  # noqa: E731
        settings, [(run.encode(), encode(metrics(run, s, s, float(s)))) for s in seqs]
    )
    db = settings.clickhouse_database
    count = lambda c: c.query(f"SELECT count() FROM {db}.events").result_rows[0][0]  # noqa: E731
    # One sink sees 0,1,2,5 and the re-send of 1 (one batch or several: the same result).
    send([0, 1, 2, 5, 1])
    first = sink_until(settings, lambda c: count(c) >= 4)
    assert first.stats.duplicates == 1
    # A new sink loads what ClickHouse holds ({0-2, 5}: two ranges) and gets 3, 4 and 5 again.
    assert scalar(settings, f"SELECT count() FROM {db}.events") == 4
    send([3, 4, 5, 1])
    second = Sink(settings)
    try:
        sink_until(settings, lambda c: count(c) >= 6, sink=second)
        second.poll(1.0)
        second.flush()
        assert second.seen.ranges((sample_event("heartbeat", seq=0)["project"], run)) == ((0, 5),)
        assert second.stats.duplicates == 2
    finally:
        second.close()
    assert stored_seqs(settings, run) == [0, 1, 2, 3, 4, 5]
    assert scalar(settings, f"SELECT count() FROM {db}.metrics WHERE run_id = '{run}'") == 6


@pytestmark_integration
def test_processors_dead_letter_wrong_keys_and_fold_late_points(
    settings: Settings, tmp_path: Path
) -> None:
    from tests.test_poison import dead_letters, headers_of
    from tests.test_processors import latest, wait_for, worker

    run = "f2-split"
    project = sample_event("heartbeat", seq=0)["project"]
    messages: list[tuple[bytes | None, bytes]] = [
        (run.encode() if s % 2 == 0 else b"x", encode(metrics(run, s, s, float(s))))
        for s in range(10)
    ]
    late = "late"  # 0,1,2,5,3,4 and re-sends of 1 and 5
    messages += [
        (late.encode(), encode(metrics(late, s, s, 10.0 - s))) for s in (0, 1, 2, 5, 3, 4, 1, 5)
    ]
    produce(settings, messages)
    skey = summary_key(project, late, "loss")
    with worker(settings, tmp_path / "processors.log"):
        wait_for(lambda: latest(settings).get(skey, {}).get("count") == 6, 90, "late points folded")
        letters = dead_letters(settings, 5)
    found = latest(settings)
    assert found[summary_key(project, run, "loss")]["count"] == 5
    assert found[skey]["min"] == 5.0 and found[skey]["max"] == 10.0
    assert found[skey]["last"] == 5.0 and found[skey]["mean"] == pytest.approx(7.5)
    assert found[run_key(project, late)]["last_seq"] == 5
    reasons = [headers_of(m)["runstream.reason"] for m in letters]
    assert all(r.startswith("key 'x' is not the event's run_id 'f2-split'") for r in reasons)
    assert {headers_of(m)["runstream.consumer"] for m in letters} == {"processors"}
