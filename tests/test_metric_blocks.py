"""Charts of long metrics from metric_blocks (migration 0015): ``run.history(samples=N)`` of a
metric whose buckets span at least 1,024 steps reads whole blocks, and each bucket says exactly
what a scan of its points says (last value by (step, seq), finite min and max, last step and
time), for any points: negative steps, steps logged twice, NaN and infinities, several inserts."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runstream
from runstream.read.run import BLOCK
from runstream.settings import Settings
from runstream.sinks import migrations
from runstream.sinks.clickhouse import connect
from runstream.sinks.snapshots import refresh
from tests.conftest import Services, isolated_settings
from tests.helpers import rows

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, tzinfo=timezone.utc)
COLUMNS = ["project", "run_id", "name", "step", "value", "ts", "seq"]


@pytest.fixture(scope="module")
def world(services: Services) -> Iterator[Settings]:
    test_settings = isolated_settings(services, "blocks")
    client = connect(test_settings)
    client.command(
        "INSERT INTO events (event_id, schema_version, type, project, run_id, seq, ts, "
        "producer_sdk, producer_version, producer_host, producer_pid, body, kafka_partition, "
        "kafka_offset) VALUES (generateUUIDv4(), 1, 'run_started', 'p', 'long', 0, now64(6), "
        "'python', '0', 'h', 1, '{\"name\":\"long\"}', 0, 0)"
    )
    refresh(client, test_settings.clickhouse_database)
    yield test_settings


def expected(
    points: list[tuple[int, float, int]], samples: int, lo: int, hi: int
) -> list[tuple[Any, ...]]:
    """(x = last step, last value, min, max, newest seq) per block-aligned bucket of the steps
    ``lo``..``hi``, from the points (step, value, seq) themselves."""
    start = lo // BLOCK * BLOCK
    width = -(-(hi - start + 1) // (samples * BLOCK)) * BLOCK
    buckets: dict[int, list[tuple[int, float, int]]] = {}
    for point in points:
        if not lo <= point[0] <= hi:
            continue
        buckets.setdefault((point[0] - start) // width, []).append(point)
    out = []
    for bucket in sorted(buckets):
        held = buckets[bucket]
        last = max(held, key=lambda p: (p[0], p[2]))
        finite = [v for _, v, _ in held if not math.isnan(v)]
        out.append((last[0], last[1], min(finite) if finite else None,
                    max(finite) if finite else None, max(p[2] for p in held)))  # fmt: skip
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    data=st.lists(st.tuples(st.integers(-3000, 9000), values), min_size=1, max_size=60),
    span=st.integers(1024, 40_000),
    negative=st.booleans(),
    samples=st.integers(1, 6),
    inserts=st.integers(1, 3),
    zoom=st.one_of(st.none(), st.tuples(st.floats(0, 0.5), st.floats(0.5, 1.0))),
)
def test_block_buckets_say_what_the_points_say(
    world: Settings, data: list[tuple[int, float]], *, span: int, negative: bool, samples: int,
    inserts: int, zoom: tuple[float, float] | None,
) -> None:  # fmt: skip
    client = connect(world)
    for table in ("metrics", "metric_blocks", "run_summaries"):
        client.command(f"TRUNCATE TABLE {table}")
    # Both ends of a range of `span` steps, so that the buckets may reach block size.
    first = -span // 2 if negative else 17
    points = [(first, 1.0, 1), (first + span * samples, 2.0, 2)]
    points += [(first + s % (span * samples), v, 10 + i) for i, (s, v) in enumerate(data)]
    rows_ = [["p", "long", "m", s, v, T0 + timedelta(seconds=seq), seq] for s, v, seq in points]
    for part in range(inserts):
        chunk = rows_[part::inserts]
        if chunk:
            client.insert("metrics", chunk, column_names=COLUMNS, settings={"async_insert": 0})
    first, last = min(s for s, _, _ in points), max(s for s, _, _ in points)
    lo, hi, cut = first, last, {}
    if zoom is not None:  # a chart's zoom: a step range, most often cutting blocks
        lo = first - 100 + round(zoom[0] * (last - first))
        hi = first + round(zoom[1] * (last - first)) + 100
        cut = {"min_step": lo, "max_step": hi}
    with runstream.Api(settings=world) as api:
        run = api.run("long", project="p")
        blocks = run._blocks(["m"], samples, cut.get("min_step"), cut.get("max_step"))
        lo, hi = max(lo, first), min(hi, last)
        assert (blocks is not None) == (hi - lo + 1 >= samples * BLOCK)
        if blocks is None:
            return  # a zoom too narrow for blocks: the scan (tests elsewhere)
        got = run.history("m", samples=samples, **cut).to_records()
        times = run.history("m", x="time", samples=samples, **cut).to_records()
    want = expected(points, samples, lo, hi)
    assert len(got) == len(want) <= samples
    for row, (x, last, low, high, _) in zip(got, want, strict=True):
        assert row["step"] == x
        assert same(row["m"], last)
        assert same(row["m.min"], low) and same(row["m.max"], high)
    for row, (*_, newest) in zip(times, want, strict=True):  # a point's ts: T0 + seq seconds
        assert row["time"] == T0 + timedelta(seconds=newest)


def test_two_keys_leave_a_bucket_empty_for_a_key_without_points(world: Settings) -> None:
    client = connect(world)
    for table in ("metrics", "metric_blocks", "run_summaries"):
        client.command(f"TRUNCATE TABLE {table}")
    points = [["p", "long", "a", s, float(s), T0, s] for s in range(0, 8192, 512)]
    points += [["p", "long", "b", s, -float(s), T0, 10_000 + s] for s in range(4096, 8192, 256)]
    client.insert("metrics", points, column_names=COLUMNS, settings={"async_insert": 0})
    with runstream.Api(settings=world) as api:
        got = api.run("long", project="p").history(["a", "b"], samples=4).to_records()
    assert [r["step"] for r in got] == [1536, 3584, 5888, 7936]
    assert [r["a"] for r in got] == [1536.0, 3584.0, 5632.0, 7680.0]
    assert [r["b"] for r in got] == [None, None, -5888.0, -7936.0]
    assert [r["b.min"] for r in got] == [None, None, -5888.0, -7936.0]
    # Zoomed: blocks 1..5 whole, the points of 1000..1023 and 6144..7000 from metrics.
    with runstream.Api(settings=world) as api:
        run = api.run("long", project="p")
        assert run._blocks(["a", "b"], 2, 1000, 7000) == (0, 4096, 1, 5)
        zoomed = run.history(["a", "b"], samples=2, min_step=1000, max_step=7000).to_records()
    assert [(r["step"], r["a"], r["b"], r["b.min"], r["a.min"]) for r in zoomed] == [
        (3584, 3584.0, None, None, 1024.0),
        (6912, 6656.0, -6912.0, -6912.0, 4096.0),
    ]


def test_a_short_metric_keeps_the_exact_buckets_of_the_scan(world: Settings) -> None:
    client = connect(world)
    for table in ("metrics", "metric_blocks", "run_summaries"):
        client.command(f"TRUNCATE TABLE {table}")
    points = [["p", "long", "m", s, float(s), T0, s] for s in range(3000)]
    client.insert("metrics", points, column_names=COLUMNS, settings={"async_insert": 0})
    with runstream.Api(settings=world) as api:
        run = api.run("long", project="p")
        assert run._blocks(["m"], 3, None, None) is None  # 1,000 steps per bucket: the scan
        got = run.history("m", samples=3).to_records()
    assert [r["step"] for r in got] == [999, 1999, 2999]


def test_migration_0015_fills_the_blocks_of_points_already_stored(services: Services) -> None:
    test_settings = isolated_settings(services, "blocks15")
    client = connect(test_settings)
    client.command("DROP VIEW metric_blocks_mv")
    client.command("TRUNCATE TABLE metric_blocks")
    client.command(
        "ALTER TABLE schema_migrations DELETE WHERE version = 15 SETTINGS mutations_sync = 2"
    )
    points = [["p", "r", "m", s, math.nan if s == 5000 else float(s % 7), T0, s + 2000]
              for s in range(-2000, 6000)]  # fmt: skip
    client.insert("metrics", points, column_names=COLUMNS, settings={"async_insert": 0})
    assert migrations.migrate(test_settings) == ["0015_metric_blocks"]
    blocks = "SELECT block, max(last_step), min(min), max(max), argMaxMerge(last) FROM " \
             "metric_blocks GROUP BY block ORDER BY block"  # fmt: skip
    got = rows(test_settings, blocks)
    assert [r[0] for r in got] == list(range(-2, 6))
    assert got[0] == (-2, -1025, 0.0, 6.0, float(-1025 % 7))
    assert got[4][1] == 3071
    assert got[-1][1] == 5999
    again = next(m for m in migrations.available() if m.version == 15)
    for statement in again.statements(test_settings.clickhouse_database):  # again: harmless
        client.command(statement)
    assert rows(test_settings, blocks) == got
