"""Fault tests of the SDK's spool: a full disk, a bounded spool with Kafka away, damaged files.

Issue 10, item 5: what cannot be spooled still goes to Kafka and is counted; the bound holds on
disk and never costs run_started/run_finished; any damage is reported and never stops a sync.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import runstream
from runstream.cli import main
from runstream.producers import delivery
from runstream.producers import spool as spool_module
from runstream.producers.spool import HEADER, RunSpool, SpoolState, runs_dir
from runstream.producers.sync import sync
from runstream.schemas import Topics
from runstream.settings import Settings
from tests.conftest import free_port
from tests.helpers import topic_records


def spooled(path: Path) -> list[dict[str, Any]]:
    spool = RunSpool(path, SpoolState(path.name, "", "t", ""))
    return [orjson.loads(data) for _, data in spool.read_from(0)]


def of_run(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    topic = Topics(settings.topic_prefix).events
    return [v for k, v in topic_records(settings, topic) if k == run_id.encode()]


class FullDisk:
    """Stands in for ``os`` in the spool module: while ``full``, a write stores some bytes and
    then fails with ENOSPC, as a real full disk does."""

    def __init__(self) -> None:
        self.full = False
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        if self.full:
            self.failures += 1
            if len(data) > 10:
                os.write(fd, bytes(data[:7]))  # a torn start, which append must cut off
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    disk = FullDisk()
    monkeypatch.setattr(spool_module, "os", disk)
    return disk


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """``runstream sync`` against a Kafka that acknowledges everything at once: the seqs it was
    sent, per run."""
    sent: dict[str, list[int]] = {}

    class Acknowledging:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.callbacks: list[Any] = []

        def try_produce(self, topic: str, run_id: str, value: bytes, callback: Any) -> bool:
            sent.setdefault(run_id, []).append(orjson.loads(value)["seq"])
            self.callbacks.append(callback)
            return True

        def poll(self, timeout: float = 0) -> None:
            callbacks, self.callbacks = self.callbacks, []
            for callback in callbacks:  # as librdkafka: on poll, in order
                callback(None, None)

        def close(self) -> None:
            pass

    from runstream.producers import transport

    monkeypatch.setattr(transport, "KafkaTransport", Acknowledging)
    return sent


# --- 5a: a full disk ---------------------------------------------------------------------------
@pytest.mark.integration
def test_full_disk_with_kafka_up_sends_everything_from_memory_and_counts_it(
    settings: Settings,
    full_disk: FullDisk,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    quiet = settings.with_overrides(system_metrics_interval=0, heartbeat_interval=3600)
    run = runstream.init(settings=quiet, project="full-disk")
    run.log({"before": 1.0})
    assert run._worker.flush(10, run._channel)
    full_disk.full = True
    with caplog.at_level(logging.WARNING, logger="runstream"):
        for step in range(20_000):
            run.log({"loss": 1.0 / (step + 1)})
        assert run._worker.flush(30, run._channel)
        full_disk.full = False  # room again: spooling resumes (tried again after a second)
        run._channel.spool_retry_at = 0.0
        for step in range(100):
            run.log({"after": float(step)})
        result = run.finish()
    assert full_disk.failures >= 1
    # run_started and "before"; the losses; "after"; run_finished (no explicit summary to send)
    assert result.produced == 2 + 20_000 + 100 + 1
    assert result.delivered == result.produced and result.failed == 0
    assert result.not_spooled >= 20_000 and result.lost == 0 and result.dropped == 0
    assert result.spooled + result.not_spooled == result.produced
    assert result.spooled >= 100 + 1, "spooling resumed once the disk had room"
    assert result.pending == 0 and result.ok
    assert "cannot write the spool" in caplog.text and "No space left" in caplog.text
    assert "spooling resumed" in caplog.text

    events = of_run(settings, run.id)
    assert [e["seq"] for e in events] == list(range(result.produced))
    assert events[-1]["type"] == "run_finished"
    # The spool holds nothing a sync could deliver (again): it says so and exits 0.
    assert main(["sync", str(settings.dir), "--kafka", settings.kafka_bootstrap]) == 0
    assert "nothing to deliver" in capsys.readouterr().out
    assert len(of_run(settings, run.id)) == result.produced


@pytest.mark.integration
def test_disk_full_on_and_off_while_the_producer_is_backed_up_lands_everything_in_order(
    settings: Settings, full_disk: FullDisk
) -> None:
    """Events in the spool and events only in memory are replayed merged, in seq order."""
    quiet = settings.with_overrides(
        system_metrics_interval=0, heartbeat_interval=3600, finish_timeout=60
    )
    run = runstream.init(settings=quiet, project="merge")
    assert run._worker.flush(10, run._channel)
    run._worker._transport(quiet).max_queued_bytes = 30_000  # backs up: replays from spool
    for step in range(6_000):
        if step % 500 == 0:  # the disk fills and frees in turn, once the worker caught up
            while run._worker._queue:
                time.sleep(0.001)
            time.sleep(0.05)
            full_disk.full = not full_disk.full
            run._channel.spool_retry_at = 0.0
        run.log({"loss": float(step)})
    full_disk.full = False
    run._channel.spool_retry_at = 0.0
    result = run.finish()
    assert result.ok, result
    # run_started, the spooled half of the losses, run_finished (no explicit summary)
    assert result.not_spooled == 3_000 and result.spooled == 3_002 and result.lost == 0
    events = of_run(settings, run.id)
    assert [e["seq"] for e in events] == list(range(result.produced)), "once each, in order"
    steps = [e["body"]["step"] for e in events if e["type"] == "metrics_logged"]
    assert steps == list(range(6_000))


def test_full_disk_with_kafka_away_reports_lost_and_keeps_memory_bounded(
    tmp_path: Path,
    full_disk: FullDisk,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(delivery, "MEMORY_HOLD_BYTES", 200_000)
    settings = Settings.load(
        env={},
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        dir=tmp_path / "spool",
        finish_timeout=0.5,
        system_metrics_interval=0,
    )
    run = runstream.init(settings=settings)
    assert run._worker.flush(0.5, run._channel) is False  # nobody acknowledges
    run._worker._transport(settings).max_queued_bytes = 10_000  # the producer's queue is full
    full_disk.full = True
    for step in range(5_000):
        run.log({"loss": float(step), "acc": 0.5})
    with caplog.at_level(logging.WARNING, logger="runstream"):
        result = run.finish()
    channel = run._channel
    assert channel.memory_bytes <= delivery.MEMORY_HOLD_BYTES + 2048 * 200, "+ one batch"
    assert result.dropped > 0 and set(channel.dropped_types) == {"metrics_logged"}
    assert result.delivered == 0 and not result.ok
    # run_started is in the spool; everything after it is in memory only: lost at exit.
    assert result.spooled == 1 and result.lost == result.not_spooled == result.produced - 1
    assert result.pending == 1
    assert [e["type"] for e in spooled(channel.spool.path)] == ["run_started"]
    held = [orjson.loads(data)["type"] for _, data in channel.memory]
    assert held[-1] == "run_finished", "never the one dropped"
    (message,) = [r.getMessage() for r in caplog.records if "events delivered" in r.getMessage()]
    assert f"{result.lost} of those are neither delivered nor spooled" in message
    assert f"{result.dropped} dropped for lack of room" in message


def test_full_disk_offline_counts_lost_and_sync_names_the_missing_seqs(
    tmp_path: Path, full_disk: FullDisk, fake_kafka: dict[str, list[int]]
) -> None:
    settings = Settings.load(
        env={}, mode="offline", dir=tmp_path / "spool", system_metrics_interval=0
    )
    run = runstream.init(settings=settings)
    run.log({"kept": 1.0})
    assert run._worker.flush(5, run._channel)
    full_disk.full = True
    for step in range(50):
        run.log({"loss": float(step)})
    assert run._worker.flush(5, run._channel)
    full_disk.full = False
    run._channel.spool_retry_at = 0.0
    result = run.finish()
    assert result.lost == result.not_spooled == 50 and not result.ok
    assert result.spooled == result.produced - 50
    # Whatever the torn writes left was cut off: the spool reads whole, gap and all.
    path = runs_dir(settings.dir) / run.id
    assert [e["seq"] for e in spooled(path)] == [0, 1, *range(52, result.produced)]
    report = sync(settings)
    (synced,) = report.runs
    assert fake_kafka[run.id] == [0, 1, *range(52, result.produced)]
    assert any("seqs 2-51 (50 events) never written" in str(d) for d in synced.damages)
    assert not report.ok


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.integration
def test_a_real_full_tmpfs_under_the_spool_loses_nothing_while_kafka_is_up(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_tmpfs(tmp_path / "tmpfs", "2m") as disk:
        quiet = settings.with_overrides(
            dir=disk / "spool", system_metrics_interval=0, heartbeat_interval=3600
        )
        run = runstream.init(settings=quiet, project="tmpfs")
        assert run._worker.flush(10, run._channel)
        filler = disk / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 65536)  # the disk is full now
        for step in range(20_000):
            run.log({"loss": 1.0 / (step + 1), "acc": step / 20_000})
        assert run._worker.flush(30, run._channel)
        filler.unlink()
        run._channel.spool_retry_at = 0.0
        for step in range(100):
            run.log({"after": float(step)})
        result = run.finish()
        assert result.not_spooled >= 1 and result.lost == 0 and result.dropped == 0
        assert result.delivered == result.produced == 20_000 + 100 + 2 and result.ok
        assert result.spooled >= 100
        assert main(["sync", str(quiet.dir), "--kafka", settings.kafka_bootstrap]) == 0
        shutil.rmtree(quiet.dir, ignore_errors=True)
    events = of_run(settings, run.id)
    assert [e["seq"] for e in events] == list(range(result.produced))


# --- 5b: the bound ------------------------------------------------------------------------------
@pytest.mark.integration
def test_spool_max_mb_holds_on_disk_and_never_drops_the_runs_lifecycle(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    dead = settings.with_overrides(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        spool_max_mb=1,
        finish_timeout=0.2,
        system_metrics_interval=0,
        heartbeat_interval=3600,
    )
    run = runstream.init(settings=dead, project="bounded", config={"lr": 0.1})
    path = runs_dir(dead.dir) / run.id
    largest = 0
    biggest_record = 0
    with caplog.at_level(logging.WARNING, logger="runstream"):
        for step in range(40_000):
            run.log({"loss": 1.0 / (step + 1), "acc": step / 40_000, "grad/norm": 0.5})
            if step % 2000 == 0:
                largest = max(largest, sum(p.stat().st_size for p in path.glob("seg-*")))
        run.summary["best"] = 0.25
        result = run.finish()
    for _, data in RunSpool(path, SpoolState(run.id, "", "t", "")).read_from(0):
        biggest_record = max(biggest_record, HEADER.size + len(data))
    on_disk = sum(p.stat().st_size for p in path.glob("seg-*"))
    largest = max(largest, on_disk)
    assert largest <= 1024 * 1024 + biggest_record, f"{largest} bytes on disk"
    assert result.dropped > 0 and not result.ok
    assert set(run._channel.dropped_types) <= delivery.DROPPABLE
    assert result.produced + result.dropped == 40_000 + 4  # started, summary x2, finished
    assert "the spool reached its bound" in caplog.text
    assert f"{result.dropped} dropped for lack of room" in caplog.text

    events = spooled(path)
    assert [e["seq"] for e in events] == list(range(len(events))), "gap-free: renumbered"
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("summary_updated") == 2

    # Kafka back: the run's spool is delivered, and the run ends.
    assert main(["sync", str(dead.dir), "--kafka", settings.kafka_bootstrap]) == 0
    landed = of_run(settings, run.id)
    assert [e["seq"] for e in landed] == list(range(len(events)))
    assert landed[-1]["type"] == "run_finished"


def test_spool_max_mb_takes_fractions() -> None:
    assert Settings.load(env={"RUNSTREAM_SPOOL_MAX_MB": "0.5"}).spool_max_mb == 0.5
    assert delivery.limits(0.5) == (524_288, 524_288 - 131_072)
    with pytest.raises(ValueError):
        Settings.load(env={"RUNSTREAM_SPOOL_MAX_MB": "0"})


# --- 5c: damaged files --------------------------------------------------------------------------
def test_a_damaged_state_at_init_rebuilds_the_run_from_its_segments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.load(
        env={}, mode="offline", dir=tmp_path / "spool", system_metrics_interval=0
    )
    first = runstream.init(settings=settings, id="damaged-state")
    for step in range(50):
        first.log({"loss": float(step)})
    first.finish()
    state = runs_dir(settings.dir) / "damaged-state" / "state.json"
    state.write_bytes(state.read_bytes()[:17])
    with caplog.at_level(logging.WARNING, logger="runstream"):
        second = runstream.init(settings=settings, id="damaged-state", resume="must")
    assert "is damaged" in caplog.text and "rebuilt from its spool segments" in caplog.text
    assert second.step == 50
    second.log({"loss": -1.0})
    second.finish()
    events = spooled(state.parent)
    assert [e["seq"] for e in events] == list(range(len(events)))
    steps = [e["body"]["step"] for e in events if e["type"] == "metrics_logged"]
    assert steps == list(range(51))


def _write_run(root: Path, run_id: str, count: int, topic: str) -> list[tuple[int, bytes]]:
    from runstream.schemas.codec import EnvelopeEncoder
    from runstream.schemas.ids import uuid7

    encoder = EnvelopeEncoder(project="damage", run_id=run_id, producer={"sdk": "test"})
    records = [
        (seq, encoder.encode(uuid7(), "metrics_logged", seq, "2026-01-01T00:00:00.000000Z",
                             orjson.dumps({"step": seq, "metrics": {"loss": seq / 7}})))
        for seq in range(count)
    ]  # fmt: skip
    state = SpoolState(run_id, "damage", topic, "", mode="offline", status="finished")
    spool = RunSpool(runs_dir(root) / run_id, state, segment_bytes=1500)
    for start in range(0, count, 4):
        spool.append(records[start : start + 4])
    spool.close()
    spool.mark(next_seq=count)
    spool.save_state(force=True)
    return records


def test_every_kind_of_damage_is_reported_and_the_rest_delivered(
    tmp_path: Path, fake_kafka: dict[str, list[int]]
) -> None:
    """Without Kafka: what sync reads, and what it reports, for each kind of damage."""
    root = tmp_path / "spool"
    runs = {name: _write_run(root, name, 30, "topic") for name in (
        "garbage-state", "empty-state", "bad-crc", "torn-end", "torn-header", "missing-seg",
        "unreadable", "intact",
    )}  # fmt: skip
    base = runs_dir(root)
    (base / "garbage-state" / "state.json").write_bytes(b"\x00garbage{")
    (base / "empty-state" / "state.json").write_bytes(b"")
    segs = {name: sorted((base / name).glob("seg-*")) for name in runs}
    middle = segs["bad-crc"][1]
    content = bytearray(middle.read_bytes())
    content[HEADER.size + 40] ^= 0xFF  # inside the segment's first record's event
    middle.write_bytes(bytes(content))
    lost_seq = HEADER.unpack_from(content, 0)[2]
    last = segs["torn-end"][-1]
    last.write_bytes(last.read_bytes()[:-5])
    last = segs["torn-header"][-1]
    size = len(runs["torn-header"][-1][1]) + HEADER.size
    last.write_bytes(last.read_bytes()[: -size + 9])
    segs["missing-seg"][2].unlink()
    segs["unreadable"][1].unlink()
    segs["unreadable"][1].mkdir()  # a directory where a segment should be: cannot be read
    (base / "stray.txt").write_text("hello")
    (base / "intact" / "notes.txt").write_text("hello")

    sent = fake_kafka
    report = sync(Settings.load(env={}), root)
    by_run = {r.run_id: r for r in report.runs}
    assert report.strays == [base / "stray.txt"]
    assert not report.ok
    assert by_run["intact"].ok and sent["intact"] == list(range(30))
    assert by_run["intact"].notes == ["stray file notes.txt ignored"]
    for name in ("garbage-state", "empty-state"):
        assert sent[name] == list(range(30)), name
        assert "state.json" in str(by_run[name].damages[0])
    bad = by_run["bad-crc"]
    assert any("at byte 0" in str(d) and "reading went on" in str(d) for d in bad.damages)
    assert sent["bad-crc"] == [s for s in range(30) if s != lost_seq], "the rest after it too"
    assert sent["torn-end"] == list(range(29))
    assert any("torn" in str(d) for d in by_run["torn-end"].damages)
    assert sent["torn-header"] == list(range(29))
    # One damaged place costs one damage, naming the seqs it cost (they were counted twice:
    # once as the place, once as the seqs missing there).
    torn = [str(d) for d in by_run["torn-header"].damages]
    assert len(torn) == 1 and "torn" in torn[0] and "seq 29 lost with it" in torn[0], torn
    assert [str(d).count(f"seq {lost_seq} lost with it") for d in bad.damages] == [1]
    assert len(by_run["torn-end"].damages) == 1
    missing = [str(d) for d in by_run["missing-seg"].damages]
    assert len(missing) == 1 and "not in the spool" in missing[0]
    assert any("unreadable" in str(d) for d in by_run["unreadable"].damages)
    for name in runs:
        assert by_run[name].delivered == len(sent[name])


@pytest.mark.integration
def test_random_damage_never_stops_sync_and_everything_intact_lands_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    from runstream.producers.spool import SpoolError, read_state

    topic = Topics(settings.topic_prefix).events
    expected: dict[str, set[int]] = {}

    op = st.tuples(
        st.sampled_from(["truncate", "flip", "delete"]),
        st.integers(0, 1000),  # which file (modulo the number of files)
        st.integers(0, 1 << 20),  # offset (modulo the file size)
        st.integers(1, 255),  # xor mask
    )

    @given(ops=st.lists(op, min_size=1, max_size=3), count=st.integers(1, 25))
    @hsettings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    def damaged_then_synced(ops: list[tuple[str, int, int, int]], count: int) -> None:
        root = tmp_path / uuid.uuid4().hex
        victim, bystander = f"v-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
        _write_run(root, victim, count, topic)
        _write_run(root, bystander, 5, topic)
        expected[bystander] = set(range(5))
        run_dir = runs_dir(root) / victim
        original = {p: p.read_bytes() for p in run_dir.iterdir()}
        original_state = read_state(run_dir)
        # Byte ranges of each record, to know which ones the damage touched.
        where: dict[int, tuple[Path, int, int]] = {}
        for path in sorted(run_dir.glob("seg-*")):
            data, offset = original[path], 0
            while offset < len(data):
                length, _, seq = HEADER.unpack_from(data, offset)
                where[seq] = (path, offset, offset + HEADER.size + length)
                offset += HEADER.size + length
        for kind, index, offset, mask in ops:
            files = sorted(p for p in run_dir.iterdir() if p.is_file())
            if not files:
                break
            path = files[index % len(files)]
            data = path.read_bytes()
            if kind == "delete":
                path.unlink()
            elif data and kind == "truncate":
                path.write_bytes(data[: offset % len(data)])
            elif data:
                at = offset % len(data)
                path.write_bytes(data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :])
        now = {p: p.read_bytes() for p in run_dir.iterdir()}
        effective = any(now.get(p) != data for p, data in original.items() if p.suffix == ".log")
        if now.get(run_dir / "state.json") != original[run_dir / "state.json"]:
            try:  # a change that keeps every value (a float's last digit) is no damage
                effective |= read_state(run_dir) != original_state
            except SpoolError:
                effective = True
        expected[victim] = {
            seq
            for seq, (path, start, end) in where.items()
            if now.get(path, b"")[start:end] == original[path][start:end]
        }

        report = sync(settings, root, timeout=60)  # never raises
        by_run = {r.run_id: r for r in report.runs}
        assert by_run[bystander].ok
        assert by_run[bystander].delivered == 5
        if victim not in by_run:  # every file deleted: an empty folder is no run, left alone
            assert run_dir in report.strays and not expected[victim] and not any(run_dir.iterdir())
            shutil.rmtree(root)
            return
        if effective:
            assert by_run[victim].damages, "the damage is reported"
            assert not report.ok
        assert by_run[victim].delivered == len(expected[victim])
        assert by_run[victim].failed == by_run[victim].undelivered == 0
        shutil.rmtree(root)

    damaged_then_synced()
    landed: dict[str, list[int]] = {}
    for key, event in topic_records(settings, topic):
        landed.setdefault(key.decode(), []).append(event["seq"])
    for run_id, seqs in expected.items():
        assert sorted(landed.get(run_id, [])) == sorted(seqs), run_id  # each exactly once


def test_the_cli_reports_damage_per_run_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "spool"
    _write_run(root, "broken", 3, "topic")
    (runs_dir(root) / "broken" / "state.json").write_bytes(b"{")
    code = main(["sync", str(root), "--kafka", f"127.0.0.1:{free_port()}", "--timeout", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "broken: damaged:" in out and "state.json" in out and "is damaged" in out
    assert out.splitlines()[0].split() == [
        "run", "sent", "delivered", "failed", "undelivered", "damaged", "result"
    ]  # fmt: skip


@pytest.mark.parametrize("mask", [0x01, 0x20, 0xFF])
def test_a_state_whose_bytes_changed_is_never_taken_for_a_good_one(
    tmp_path: Path, mask: int
) -> None:
    """Every byte of state.json, changed: never read as another state (a digit of
    acked_through, or the checksum's own key, would otherwise skip or resend events). A change
    that keeps every value (the last digit of a float that parses to the same float) may pass."""
    from runstream.producers.spool import SpoolError, read_state

    state = SpoolState("run", "p", "topic", "k", next_seq=12, acked_through=7)
    state.not_spooled = [[3, 4]]
    spool = RunSpool(tmp_path / "run", state)
    spool.save_state(force=True)
    path = tmp_path / "run" / "state.json"
    good = path.read_bytes()
    assert read_state(tmp_path / "run") == spool.state
    for at in range(len(good)):
        path.write_bytes(good[:at] + bytes([good[at] ^ mask]) + good[at + 1 :])
        with contextlib.suppress(SpoolError):
            assert read_state(tmp_path / "run") == spool.state, at


def test_sync_leaves_folders_that_are_not_runs_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Empty or foreign folders under runs/ were taken for runs: sync wrote a state.json into
    them, reported them damaged and exited 1."""
    root = tmp_path / "spool"
    (runs_dir(root) / "empty").mkdir(parents=True)
    (runs_dir(root) / "notes").mkdir()
    (runs_dir(root) / "notes" / "readme.txt").write_text("hello")
    code = main(["sync", str(root), "--kafka", f"127.0.0.1:{free_port()}", "--timeout", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert sorted(p.name for p in (runs_dir(root) / "empty").iterdir()) == []
    assert sorted(p.name for p in (runs_dir(root) / "notes").iterdir()) == ["readme.txt"]
    assert "damaged" not in out.replace("damaged  result", "")
    assert out.count("not a run directory") == 2


def _set_owner(root: Path, run_id: str, **owner: Any) -> None:
    from runstream.producers.spool import read_state

    path = runs_dir(root) / run_id
    state = read_state(path)
    assert state is not None
    spool = RunSpool(path, state)
    spool.mark(status="running", **owner)
    spool.save_state()


def test_sync_skips_a_run_only_when_its_own_process_is_alive_here(
    tmp_path: Path, fake_kafka: dict[str, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A dead run whose recorded pid exists here (PID 1 of a container, a reused pid) was
    skipped forever with exit 0. Alive means: this host, that pid, that process start time."""
    import socket

    import psutil

    from runstream.producers.spool import process_identity

    root = tmp_path / "spool"
    parent = psutil.Process().ppid()  # alive, and not this process
    alive = psutil.Process(parent)
    cases = {
        "pid-1-elsewhere": {"pid": 1, "host": "other-machine", "started": 1.0},
        "reused-pid": {"pid": parent, "host": socket.gethostname(), "started": 12345.0},
        "old-sdk": {"pid": parent, "host": "", "started": 0.0},
        "truly-alive": {
            "pid": parent,
            "host": socket.gethostname(),
            "started": alive.create_time(),
        },
    }
    for run_id, owner in cases.items():
        _write_run(root, run_id, 3, "topic")
        _set_owner(root, run_id, **owner)
    report = sync(Settings.load(env={}), root)
    by_run = {r.run_id: r for r in report.runs}
    for run_id in ("pid-1-elsewhere", "reused-pid", "old-sdk"):
        assert by_run[run_id].ok and fake_kafka[run_id] == [0, 1, 2], run_id
    assert by_run["truly-alive"].skipped and "truly-alive" not in fake_kafka
    assert not by_run["truly-alive"].ok and not report.ok  # not delivered: exit 1

    code = main(["sync", str(root), "--kafka", f"127.0.0.1:{free_port()}", "--timeout", "1"])
    out = capsys.readouterr().out
    assert code == 1 and "skipped: still running in process" in out and "--force" in out
    report = sync(Settings.load(env={}), root, force=True)
    assert fake_kafka["truly-alive"] == [0, 1, 2]

    # A new run records this process as its owner.
    pid, host, started = process_identity()
    assert (pid, host) == (os.getpid(), socket.gethostname())
    assert started == psutil.Process().create_time()


def test_the_progress_bar_line_ends_before_the_table() -> None:
    import io

    from runstream.producers.sync import ProgressBar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ProgressBar(stream)
    bar("run-1", 3, 10)  # the run stops part way (timeout): the line stays open...
    bar.close()  # ...until the CLI closes the bar before printing the table
    assert stream.getvalue().endswith("3/10\n")
    bar.close()
    assert stream.getvalue().count("\n") == 1


def test_finish_names_the_transport_error_when_kafka_is_unreachable(tmp_path: Path) -> None:
    """FinishResult.last_error stayed None although librdkafka reported "Connection refused"."""
    settings = Settings.load(
        env={},
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        dir=tmp_path / "spool",
        finish_timeout=3,
        system_metrics_interval=0,
    )
    run = runstream.init(settings=settings, project="unreachable")
    run.log({"loss": 1.0})
    result = run.finish()
    assert not result.ok and result.delivered == 0 and result.pending == 3
    assert result.last_error is not None and "refused" in result.last_error.lower(), result


def test_a_batch_too_large_for_the_disk_spools_every_whole_record_that_fits(
    tmp_path: Path,
) -> None:
    """256 KiB tmpfs, an offline run of 602 events (~356 KB): the batch was written whole or
    not at all, so nothing was spooled (run_started included) and all 602 were lost. Now every
    whole record that fits is written, the rest is counted."""
    with small_tmpfs(tmp_path / "tmpfs", "256k") as disk:
        settings = Settings.load(
            env={}, mode="offline", dir=disk / "spool", system_metrics_interval=0
        )
        run = runstream.init(settings=settings, project="tmpfs", id="small-disk")
        for step in range(600):
            run.log({"x" * 480: float(step)})
        result = run.finish()
        assert result.produced == 602
        path = runs_dir(settings.dir) / "small-disk"
        found = [
            orjson.loads(d)
            for _, d in RunSpool(path, SpoolState("small-disk", "", "t", "")).read_from(0)
        ]
        used = sum(p.stat().st_size for p in path.glob("seg-*.log"))
        assert result.spooled == len(found) and result.spooled + result.not_spooled == 602
        assert found[0]["type"] == "run_started"
        assert [e["seq"] for e in found] == list(range(len(found)))
        # The disk is full to within one record (and the state file).
        assert used > 256 * 1024 - 2 * (len(orjson.dumps(found[-1])) + HEADER.size) - 4096
        assert result.lost == result.not_spooled > 0


def test_segments_are_rolled_within_a_batch(tmp_path: Path) -> None:
    """A batch was written whole into one segment, so segments outgrew their size."""
    spool = RunSpool(tmp_path / "run", SpoolState("run", "", "t", ""), segment_bytes=65536)
    records = [(seq, b'{"seq":%d,"pad":"%s"}' % (seq, b"x" * 1000)) for seq in range(300)]
    spool.append(records[:10])
    spool.append(records[10:])  # one batch of ~300 KB
    sizes = [path.stat().st_size for _, path in spool.segments()]
    assert len(sizes) >= 5 and max(sizes) <= 65536, sizes
    assert [seq for seq, _ in spool.read_from(0)] == list(range(300))
    big = RunSpool(tmp_path / "big", SpoolState("big", "", "t", ""), segment_bytes=65536)
    big.append([(0, b"y" * 100_000), (1, b"z")])  # a record over the size: alone in its segment
    assert [path.stat().st_size for _, path in big.segments()] == [100_016, 17]
