"""Issue 10, item 8: no input makes a record of the processors larger than the broker accepts,
and a successor restores the split state exactly. Without Kafka (the Aggregator with a dict for
its store); tests/test_processors_state.py runs the same against the real broker."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from runstream.processors.aggregates import new_run_state, new_summary, run_key, summary_key
from runstream.processors.aggregator import Aggregator
from runstream.processors.bounds import ALERT_BYTES, CONFIG_BYTES
from runstream.processors.rules import loads_rules
from runstream.processors.runstore import CHUNK_BYTES, RunStore, is_head
from runstream.schemas import Topics, encode
from runstream.schemas.limits import MAX_RECORD_BYTES
from runstream.settings import Settings
from tests.samples import sample_event
from tests.test_aggregator import Message

CHANGELOG = "t-runs-changelog"
TOPICS = Topics("t")

RULES = """
[[rule]]
name = "any-nan"
kind = "nan"
metric = "*"

[[rule]]
name = "any-plateau"
kind = "plateau"
metric = "*"
patience = 1000
"""


class Outputs:
    """Checks every record against the broker's limit as it is sent, as librdkafka would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> None:
        size = len(key) + len(value or b"")
        size += sum(len(k) + len(v) for k, v in (headers or {}).items())
        assert size <= MAX_RECORD_BYTES, (topic, key[:80], size)
        self.sent.append((topic, key, value))

    def to(self, topic: str) -> dict[bytes, bytes | None]:
        """Latest value per key: what compaction keeps."""
        return {k: v for t, k, v in self.sent if t == topic}


def aggregator(store: dict[bytes, bytes], rules: str = "") -> tuple[Aggregator, Outputs]:
    outputs = Outputs()
    agg = Aggregator(
        Settings.load(topic_prefix="t"),
        store,
        CHANGELOG,
        outputs,  # type: ignore[arg-type]
        loads_rules(rules) if rules else [],
    )
    agg.take_over(frozenset({0}))
    return agg, outputs


def event(kind: str, seq: int, run_id: str = "big", **body: Any) -> bytes:
    e = sample_event(kind, seq=seq, run_id=run_id)
    if body:
        e["body"] = {**e["body"], **body} if kind == "run_started" else body
    raw = encode(e)
    assert len(raw) < MAX_RECORD_BYTES
    return raw


def metrics_events(
    names: list[str],
    step: int,
    seq0: int,
    per_event: int,
    *,
    value: Any = None,
    run_id: str = "big",
) -> list[bytes]:
    """One step of every name, in events of ``per_event`` metrics each."""
    out = []
    for i in range(0, len(names), per_event):
        part = names[i : i + per_event]
        metrics = {
            n: value if value is not None else float(i + j + step) for j, n in enumerate(part)
        }
        out.append(event("metrics_logged", seq0 + len(out), run_id, step=step, metrics=metrics))
    return out


def batch(values: list[bytes], first_offset: int = 0) -> list[Any]:
    return [Message(value, first_offset + i) for i, value in enumerate(values)]


def restored(store: dict[bytes, bytes], run_id: str = "big") -> dict[str, Any]:
    """The changelog as faust restores it (latest per key, tombstones deleted) read back."""
    entry = RunStore(store, CHANGELOG, Outputs()).load(run_key("vision", run_id))
    assert entry is not None
    return entry


def replay(outputs: Outputs) -> dict[bytes, bytes]:
    return {k: v for k, v in outputs.to(CHANGELOG).items() if v is not None}


def test_a_run_of_100000_metric_names_is_stored_in_records_that_fit_and_restored_exactly() -> None:
    names = [f"layer{i // 1000}/unit{i % 1000}/grad_norm" for i in range(100_000)]
    store: dict[bytes, bytes] = {}
    agg, outputs = aggregator(store)
    first = [event("run_started", 0), *metrics_events(names, 0, 1, 5_000)]
    agg.process(batch(first))  # every record was checked by Outputs.send
    assert agg.stats.dead_letters == 0 and agg.stats.failed_runs == 0
    summaries = outputs.to(TOPICS.summaries)
    assert len(summaries) == 100_000
    spot = orjson.loads(summaries[summary_key("vision", "big", names[12_345]).encode()] or b"")
    assert (spot["count"], spot["last"], spot["min"]) == (1, 12_345.0, 12_345.0)
    # Chunks of summaries, each within its bound; the head is small.
    changelog = replay(outputs)
    chunks = [k for k in changelog if not is_head(k)]
    assert len(chunks) > 10
    assert all(len(changelog[k]) <= CHUNK_BYTES for k in chunks)
    assert len(changelog[run_key("vision", "big").encode()] or b"") < CHUNK_BYTES + 10_000

    # A successor restores from the changelog and goes on exactly: the same points again (a
    # re-read) change nothing, the next step counts once.
    successor, later = aggregator(replay(outputs))
    assert len(successor.live[run_key("vision", "big")]["summaries"]) == 100_000
    successor.process(batch(first))
    assert successor.stats.duplicates == len(first)
    successor.process(batch(metrics_events(names, 1, len(first), 5_000, value=-1.0)))
    entry = restored(replay(outputs) | replay(later))  # the changelog: both workers' records
    assert len(entry["summaries"]) == 100_000
    s = entry["summaries"][names[99_999]]
    assert (s["count"], s["min"], s["max"], s["last"], s["mean"]) == (
        2, -1.0, 99_999.0, -1.0, (99_999.0 - 1.0) / 2
    )  # fmt: skip

    # A normal run afterwards is folded as ever.
    successor.process(batch([event("metrics_logged", 0, "small", step=0, metrics={"loss": 0.5})]))
    small = later.to(TOPICS.summaries)[summary_key("vision", "small", "loss").encode()]
    assert orjson.loads(small or b"")["last"] == 0.5


def test_long_names_and_a_track_per_metric_cut_the_head_into_pieces_that_restore() -> None:
    """512-character names under two rules on ``*``: the alert state alone is megabytes."""
    names = [f"{i:06d}" + "n" * 506 for i in range(8_000)]
    store: dict[bytes, bytes] = {}
    agg, outputs = aggregator(store, RULES)
    values = [event("run_started", 0), *metrics_events(names, 0, 1, 1_000)]
    values += metrics_events(names[:1], 1, len(values), 1, value="NaN")  # an open NaN alert
    agg.process(batch(values))
    assert agg.stats.alerts == 1
    changelog = replay(outputs)
    head_key = run_key("vision", "big").encode()
    head = msgspec.msgpack.decode(changelog[head_key] or b"")
    assert head["pieces"] > 1  # the head is only a pointer to its pieces
    # Another batch: a new generation of pieces, the old one deleted (tombstones).
    agg.process(batch(metrics_events(names[1:2], 1, len(values), 1), first_offset=len(values)))
    changelog = replay(outputs)
    pieces = [k for k in changelog if b"\x1eh" in k]
    assert all(k.count(b"\x1eh2.") for k in pieces), pieces[:3]
    assert pieces and set(store) == set(changelog)

    # The successor has the open alert: the next finite value resolves it (same alert id),
    # it does not fire again.
    successor, later = aggregator(changelog, RULES)
    successor.process(
        batch(metrics_events(names[:1], 2, len(values) + 1, 1, value=1.0), first_offset=99)
    )
    [(_, raw)] = [(k, v) for k, v in later.to(TOPICS.alerts).items()]
    assert orjson.loads(raw or b"")["resolved_at"] is not None


def test_a_huge_config_is_kept_without_its_largest_values_and_says_so() -> None:
    store: dict[bytes, bytes] = {}
    agg, outputs = aggregator(store)
    blob = "x" * 850_000  # a whole event's worth: what an SDK may send
    agg.process(batch([event("run_started", 0, config={"lr": 0.1, "blob": blob, "layers": 4})]))
    runs = outputs.to(TOPICS.runs)
    record = orjson.loads(runs[run_key("vision", "big").encode()] or b"")
    assert record["config"] == {"lr": 0.1, "layers": 4}
    assert "'blob'" in record["left_out"]["config"]
    # Patches add up: each within an event, together far beyond a record.
    patches = [
        event("config_updated", seq, config={f"part{seq}": "y" * 400_000}) for seq in range(1, 6)
    ]
    agg.process(batch(patches, first_offset=1))
    record = orjson.loads(outputs.to(TOPICS.runs)[run_key("vision", "big").encode()] or b"")
    assert len(orjson.dumps(record["config"])) <= CONFIG_BYTES
    assert record["config"]["lr"] == 0.1 and "config" in record["left_out"]
    # The live state follows the same bound, and a successor restores it.
    assert restored(replay(outputs))["run"]["config"] == record["config"]


def test_huge_tags_names_and_define_metric_choices_leave_the_runs_record_not_the_broker() -> None:
    store: dict[bytes, bytes] = {}
    agg, outputs = aggregator(store)
    tags = [f"{i:05d}" + "t" * 500 for i in range(1_700)]  # 860 KB of tags
    values = [event("run_started", 0, name="n" * 600_000)]
    values.append(event("tags_updated", 1, tags=tags))
    values += [
        event("metric_defined", 2 + i, name=f"{i:05d}" + "m" * 500, summary="min")
        for i in range(2_000)
    ]
    values.append(event("metrics_logged", 2_002, step=0, metrics={"00001" + "m" * 500: 3.0}))
    agg.process(batch(values))
    assert agg.stats.failed_runs == 0 and agg.stats.dead_letters == 0
    record = orjson.loads(outputs.to(TOPICS.runs)[run_key("vision", "big").encode()] or b"")
    assert set(record["left_out"]) >= {"metric_summaries", "tags"}
    assert record["last_seq"] == 2_002 and record["status"] == "running"
    # The worker's own state keeps them: the choice still applies to the summary.
    summary = orjson.loads(
        outputs.to(TOPICS.summaries)[summary_key("vision", "big", "00001" + "m" * 500).encode()]
        or b""
    )
    assert summary["summary"] == "min"
    entry = restored(replay(outputs))
    assert len(entry["run"]["tags"]) == 1_700 and len(entry["run"]["metric_summaries"]) == 2_000


def test_an_entry_of_the_old_single_record_layout_is_read_and_rewritten_in_chunks() -> None:
    state = new_run_state("vision", "old")
    state.update(last_seq=3, partition=0)
    summary = new_summary("vision", "old", "loss")
    summary.update(count=4, last_seq=3, sum=2.0, finite_count=4, mean=0.5, last=0.1)
    old = {"run": state, "summaries": {"loss": summary}, "alerts": None}
    store = {run_key("vision", "old").encode(): msgspec.msgpack.encode(old)}
    agg, outputs = aggregator(store)
    assert run_key("vision", "old") in agg.live
    agg.process(batch([event("metrics_logged", 4, "old", step=4, metrics={"acc": 1.0})]))
    entry = restored(replay(outputs), "old")
    assert entry["summaries"]["loss"]["count"] == 4  # carried over into the new layout
    assert entry["summaries"]["acc"]["count"] == 1


def test_a_run_whose_fold_raises_is_dead_lettered_and_the_others_go_on() -> None:
    store: dict[bytes, bytes] = {}
    agg, outputs = aggregator(store)
    observe = agg.evaluator.observe

    def flaky(e: Any) -> Any:
        if e.run_id == "bad":
            raise RuntimeError("boom")
        return observe(e)

    agg.evaluator.observe = flaky  # type: ignore[method-assign]
    values = [
        event("metrics_logged", 0, "bad", step=0, metrics={"x": 1.0}),
        event("metrics_logged", 0, "good", step=0, metrics={"x": 2.0}),
    ]
    assert agg.process(batch(values)) == {0: 1}
    assert agg.stats.failed_runs == 1 and agg.stats.dead_letters == 1
    [(_, dead)] = [(k, v) for k, v in outputs.to(TOPICS.dead_letters).items()]
    assert dead == values[0]
    assert run_key("vision", "bad") not in agg.live
    good = outputs.to(TOPICS.summaries)[summary_key("vision", "good", "x").encode()]
    assert orjson.loads(good or b"")["last"] == 2.0


def test_a_user_alert_with_a_text_of_a_whole_event_is_published_cut_and_says_so() -> None:
    store: dict[bytes, bytes] = {}
    agg, outputs = aggregator(store, '[[rule]]\nname = "mine"\nkind = "user"\n')
    text = "é" * 440_000  # 880 KB: the schema does not bound run.alert()'s text
    agg.process(batch([event("alert_raised", 0, title="huge", text=text, level="warn")]))
    [raw] = [v for _, k, v in outputs.sent if _ == TOPICS.alerts]
    assert raw is not None and len(raw) <= ALERT_BYTES
    alert = orjson.loads(raw)
    assert alert["title"] == "huge" and alert["text"].startswith("éé")
    assert alert["text"].endswith("more bytes; the event holds the whole text]")


def test_thousands_of_define_metric_choices_are_applied_without_a_scan_per_metric() -> None:
    store: dict[bytes, bytes] = {}
    agg, outputs = aggregator(store)
    names = [f"m{i}" for i in range(20_000)]
    values = [event("metric_defined", i, name=n, summary="max") for i, n in enumerate(names)]
    values.append(event("metric_defined", len(values), name="p/*", summary="min"))
    metrics = {n: 1.0 for n in names} | {"p/x": 2.0, "q": 3.0}
    values.append(event("metrics_logged", len(values), step=0, metrics=metrics))
    agg.process(batch(values))
    summaries = outputs.to(TOPICS.summaries)

    def choice(name: str) -> str:
        raw = summaries[summary_key("vision", "big", name).encode()]
        return str(orjson.loads(raw or b"")["summary"])

    assert [choice("m19999"), choice("p/x"), choice("q")] == ["max", "min", "last"]


def test_a_damaged_entry_costs_its_run_not_the_worker() -> None:
    store: dict[bytes, bytes] = {}
    agg, _ = aggregator(store)
    values = [
        event("metrics_logged", 0, "hurt", step=0, metrics={"x": 1.0}),
        event("metrics_logged", 0, "fine", step=0, metrics={"x": 1.0}),
    ]
    agg.process(batch(values))
    store[run_key("vision", "hurt").encode()] = b"\xc1 not msgpack"  # a damaged head
    successor, outputs = aggregator(store)  # takes over: skips the run it cannot read
    assert set(successor.live) == {run_key("vision", "fine")}
    later = [
        event("metrics_logged", 1, "hurt", step=1, metrics={"x": 2.0}),
        event("metrics_logged", 1, "fine", step=1, metrics={"x": 2.0}),
    ]
    successor.process(batch(later, first_offset=2))
    [(_, dead)] = list(outputs.to(TOPICS.dead_letters).items())
    assert dead == later[0]
    fine = outputs.to(TOPICS.summaries)[summary_key("vision", "fine", "x").encode()]
    assert orjson.loads(fine or b"")["count"] == 2


def test_a_metric_found_in_two_chunks_keeps_its_latest_copy_and_the_other_is_rewritten() -> None:
    """A worker killed between a new chunk and its head, and the batch read again, may place
    a metric in another chunk than the first time."""
    state = new_run_state("vision", "twice")
    state.update(last_seq=5, partition=0)
    older, newer = new_summary("vision", "twice", "x"), new_summary("vision", "twice", "x")
    older.update(count=1, version=1, last=1.0)
    newer.update(count=2, version=2, last=2.0)
    other = new_summary("vision", "twice", "y")
    key = run_key("vision", "twice")
    head = {"v": 2, "run": state, "alerts": None, "chunks": 2, "first": [newer, other]}
    store = {
        key.encode(): msgspec.msgpack.encode(head),
        key.encode() + b"\x1es1\x1e": msgspec.msgpack.encode([older]),
    }
    runs = RunStore(store, CHANGELOG, Outputs())
    entry = runs.load(key)
    assert entry is not None and entry["summaries"]["x"]["last"] == 2.0
    runs.save(key, entry, 0, set())
    assert msgspec.msgpack.decode(store[key.encode() + b"\x1es1\x1e"]) == []
    reloaded = runs.load(key)
    assert reloaded is not None and reloaded["summaries"]["x"]["count"] == 2
