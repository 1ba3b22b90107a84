"""The Aggregator's bookkeeping, without Kafka: what it keeps in memory, what it writes to the
store and the changelog, and what it publishes. (The worker around it, against the real broker,
is tested in tests/test_processors.py.)"""

from __future__ import annotations

from typing import Any

import orjson

from runstream.processors.aggregates import run_key, summary_key
from runstream.processors.aggregator import Aggregator
from runstream.processors.rules import loads_rules
from runstream.processors.runstore import RunStore
from runstream.schemas import Topics, encode
from runstream.settings import Settings
from tests.samples import sample_event

RULES = """
[[rule]]
name = "loss-nan"
kind = "nan"
metric = "loss"
"""


class Message:
    """What the Aggregator reads of a confluent-kafka message."""

    def __init__(self, value: bytes, offset: int, partition: int = 0) -> None:
        self._value, self._offset, self._partition = value, offset, partition

    def value(self) -> bytes:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def topic(self) -> str:
        return "events"

    def key(self) -> bytes:
        # As every producer of ours keys an event: by its run id (docs/schemas.md).
        try:
            run_id = orjson.loads(self._value)["run_id"]
        except Exception:
            return b""
        return run_id.encode() if isinstance(run_id, str) else b""


class Outputs:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, int | None]] = []

    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        partition: int | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> None:
        self.sent.append((topic, key, value, partition))

    def to(self, topic: str) -> list[tuple[bytes, bytes, int | None]]:
        return [(k, v, p) for t, k, v, p in self.sent if t == topic]


def metrics(run_id: str, seq: int, step: int, loss: float | str) -> bytes:
    event = sample_event("metrics_logged", seq=seq, run_id=run_id)
    event["body"] = {"step": step, "metrics": {"loss": loss, "acc": step / 10}}
    return encode(event)


def finished(run_id: str, seq: int) -> bytes:
    return encode(sample_event("run_finished", seq=seq, run_id=run_id))


def aggregator(store: dict[bytes, bytes] | None = None) -> tuple[Aggregator, Outputs]:
    outputs = Outputs()
    agg = Aggregator(
        Settings.load(topic_prefix="t"),
        {} if store is None else store,
        "t-runs-changelog",
        outputs,  # type: ignore[arg-type]
        loads_rules(RULES),
    )
    agg.take_over(frozenset({0, 1}))
    return agg, outputs


def stored(store: dict[bytes, bytes], run_id: str) -> dict[str, Any]:
    """A run's entry as a successor would read it from the changelog."""
    entry = RunStore(store, "t-runs-changelog", Outputs()).load(run_key("vision", run_id))
    assert entry is not None
    return entry


def batch(*values: bytes, first_offset: int = 0) -> list[Any]:
    return [Message(value, first_offset + i) for i, value in enumerate(values)]


def test_a_batch_writes_each_run_once_and_returns_the_offsets_to_commit() -> None:
    agg, outputs = aggregator()
    positions = agg.process(
        batch(*(metrics("a", seq, seq, 1.0 / (seq + 1)) for seq in range(5)), metrics("b", 0, 0, 2))
    )
    assert positions == {0: 5}
    changelog = outputs.to("t-runs-changelog")
    # One record per run: its head, which holds the first (here the only) chunk of summaries.
    assert sorted(key for key, _, _ in changelog) == [b"vision\x1fa", b"vision\x1fb"]
    entry = stored({k: v for k, v, _ in changelog}, "a")
    assert entry["summaries"]["loss"]["count"] == 5
    assert entry["run"]["last_seq"] == 4
    summaries = [k for k, _, _ in outputs.to(Topics("t").summaries)]
    assert summary_key("vision", "a", "loss").encode() in summaries
    assert agg.stats.events == 6 and agg.stats.batches == 1


def test_bad_messages_are_dead_lettered_and_their_offsets_still_committed() -> None:
    agg, outputs = aggregator()
    positions = agg.process(batch(b"{not json", metrics("a", 0, 0, 1.0)))
    assert positions == {0: 1}
    [(_, value, _)] = outputs.to(Topics("t").dead_letters)
    assert value == b"{not json"
    assert agg.stats.dead_letters == 1 and agg.stats.events == 1


def test_ended_runs_leave_memory_and_come_back_exact_when_they_log_again() -> None:
    store: dict[bytes, bytes] = {}
    agg, _ = aggregator(store)
    agg.process(batch(metrics("a", 0, 0, 1.0), metrics("b", 0, 0, 1.0), finished("b", 1)))
    assert set(agg.live) == {run_key("vision", "a")}  # b ended: only in the store
    assert [run_id for _, run_id in agg.evaluator.known_runs()] == ["a"]
    assert run_key("vision", "b").encode() in store

    # b logs again (a late point): folded onto its stored entry, not from scratch.
    agg.process(batch(metrics("b", 2, 1, "NaN"), first_offset=3))
    entry = stored(store, "b")
    assert entry["summaries"]["loss"]["count"] == 2
    assert entry["summaries"]["loss"]["nan_count"] == 1
    assert entry["run"]["status"] == "finished"
    assert run_key("vision", "b") not in agg.live
    assert agg.stats.alerts == 1  # the NaN

    # A worker taking the partitions over loads the running runs only.
    successor, _ = aggregator(store)
    assert set(successor.live) == {run_key("vision", "a")}
    # The same event again (a re-read after a crash) changes nothing and fires nothing.
    successor.process(batch(metrics("b", 2, 1, "NaN"), first_offset=4))
    assert successor.stats.duplicates == 1 and successor.stats.alerts == 0
