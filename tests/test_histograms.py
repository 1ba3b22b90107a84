"""Histograms as stored data: runstream.Histogram, the histogram_logged event, the histograms
table in ClickHouse, and the processors leaving the new type alone."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import runstream
from runstream import wandb
from runstream.errors import HistogramError
from runstream.producers.histograms import MAX_BINS, _binned
from runstream.schemas import Topics, encode
from runstream.schemas.limits import MAX_EVENT_BYTES
from runstream.settings import Settings
from tests.helpers import records_of, scalar, sink_until
from tests.samples import sample_event
from tests.test_aggregator import aggregator, batch, metrics
from tests.test_sdk_local import of_type, offline_settings, spooled


# --- building ----------------------------------------------------------------------------------
def test_values_are_binned_like_numpy_with_non_finite_values_counted_out() -> None:
    values = [0.0, 1.0, 1.0, 2.0, 3.0, 4.0, math.nan, math.inf, -math.inf]
    h = runstream.Histogram(values, num_bins=4)
    assert h.bins == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert h.counts == [1, 2, 1, 2]  # the last bin holds its right edge, as numpy's does
    assert h.nonfinite == 3
    counts, edges = np.histogram([0, 1, 1, 2, 3, 4], bins=4)
    assert h.counts == counts.tolist() and h.bins == edges.tolist()
    assert len(runstream.Histogram(np.random.default_rng(0).normal(size=1000)).counts) == 64


def test_torch_tensors_of_any_shape_and_dtype_are_taken() -> None:
    import torch

    t = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    h = runstream.Histogram(t, num_bins=3)
    assert h.counts == [4, 4, 4] and h.bins == [0.0, 11 / 3, 22 / 3, 11.0]


def test_np_histogram_is_taken_as_given_and_checked() -> None:
    h = runstream.Histogram(np_histogram=(np.array([1, 0, 3]), np.array([0.0, 0.5, 1.0, 2.0])))
    assert h.counts == [1, 0, 3] and h.bins == [0.0, 0.5, 1.0, 2.0]
    assert runstream.Histogram(np_histogram=([0.5, 1.5], [0, 1, 1])).counts == [0.5, 1.5]
    bad = {
        "one more edge": ([1, 2], [0, 1]),
        "ascending": ([1, 2], [0, 2, 1]),
        "finite": ([1], [0, math.inf]),
        ">= 0": ([-1], [0, 1]),
        "1 to 512 bins": ([1] * (MAX_BINS + 1), list(range(MAX_BINS + 2))),
        "(counts, bin_edges)": (1, 2),
    }
    for words, (counts, edges) in bad.items():
        with pytest.raises(HistogramError, match=words.replace("(", r"\(").replace(")", r"\)")):
            runstream.Histogram(np_histogram=(counts, edges))
    for bins in (0, MAX_BINS + 1, 2.5):
        with pytest.raises(HistogramError, match="num_bins"):
            runstream.Histogram([1.0], num_bins=bins)  # type: ignore[arg-type]
    with pytest.raises(HistogramError, match="needs values"):
        runstream.Histogram()
    with pytest.raises(HistogramError, match="takes numbers"):
        runstream.Histogram(["a", "b"])


@hsettings(max_examples=60, deadline=None)
@given(
    values=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=40),
        elements=st.floats(allow_nan=True, allow_infinity=True),
    ),
    bins=st.integers(1, MAX_BINS),
)
def test_counts_sum_to_the_finite_values_and_edges_ascend(values: np.ndarray, bins: int) -> None:
    h = runstream.Histogram(values, num_bins=bins)
    finite = int(np.isfinite(values).sum())
    assert sum(h.counts) == finite
    assert h.nonfinite == values.size - finite
    assert len(h.bins) == len(h.counts) + 1 == bins + 1
    assert all(math.isfinite(b) for b in h.bins)
    assert all(a <= b for a, b in zip(h.bins, h.bins[1:], strict=False)) and h.bins[0] < h.bins[-1]
    # Every finite value lies within the edges; the plain-Python path (no numpy) agrees.
    if finite:
        assert h.bins[0] <= np.nanmin(values[np.isfinite(values)])
        assert h.bins[-1] >= np.nanmax(values[np.isfinite(values)])
    assert _binned(values.reshape(-1).tolist(), bins) == (h.bins, h.counts, h.nonfinite)


# --- logging, offline --------------------------------------------------------------------------
def test_log_sends_histograms_next_to_the_steps_metrics(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    run.log({"loss": 1.0, "w": runstream.Histogram([1, 2, 3], num_bins=2)}, step=5)
    run.log({"layer": {"b": runstream.Histogram([0.0])}})  # histograms only: step 6
    run.log({"acc": 0.5, "h": runstream.Histogram([1.0, 2.0], num_bins=1)}, commit=False)
    run.log({"loss": 0.5})
    run.log({"n" * 600: runstream.Histogram([1.0])}, step=9)
    result = run.finish()
    events = spooled(settings, run.id)
    assert [e["body"] for e in of_type(events, "histogram_logged")] == [
        {"step": 5, "histograms": {"w": {"bins": [1.0, 2.0, 3.0], "counts": [1, 2]}}},
        {
            "step": 6,
            "histograms": {
                "layer/b": {
                    "bins": [-0.5] + [-0.5 + i / 64 for i in range(1, 64)] + [0.5],
                    "counts": [0] * 32 + [1] + [0] * 31,
                }
            },
        },
        {"step": 7, "histograms": {"h": {"bins": [1.0, 2.0], "counts": [2]}}},
    ]
    assert [e["body"] for e in of_type(events, "metrics_logged")] == [
        {"step": 5, "metrics": {"loss": 1.0}},
        {"step": 7, "metrics": {"acc": 0.5, "loss": 0.5}},
    ]
    assert result.refused == 1 and run.refused_by_kind == {"metric": 1}


def test_plain_numbers_never_take_the_histogram_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runstream.producers.run as run_module

    calls: list[int] = []
    original = run_module.snapshot_metrics

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run_module, "snapshot_metrics", counting)
    run = runstream.init(settings=offline_settings(tmp_path))
    for step in range(10):
        run.log({"loss": 1.0 / (step + 1), "step": step})
    assert calls == []  # the one-sum test still says "plain" for floats and ints
    run.log({"h": runstream.Histogram([1.0])})
    assert calls == [1]
    run.finish()


def test_many_histograms_at_one_step_are_split_to_fit_the_event_limit(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    rng = np.random.default_rng(1)
    logged = {
        f"layer{i}/w": runstream.Histogram(rng.normal(size=2000), num_bins=MAX_BINS)
        for i in range(120)
    }
    run.log(logged, step=3)
    assert run.finish().refused == 0
    events = of_type(spooled(settings, run.id), "histogram_logged")
    assert len(events) > 1
    assert all(len(orjson.dumps(e)) <= MAX_EVENT_BYTES for e in events)
    assert {e["body"]["step"] for e in events} == {3}
    stored = {n: h for e in events for n, h in e["body"]["histograms"].items()}
    assert stored == {n: h.to_json() for n, h in logged.items()}


def test_a_wandb_histogram_never_raises_and_a_bad_one_is_refused_when_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = wandb.Histogram([1, 2, 3], num_bins=3)
    assert isinstance(good, runstream.Histogram) and good.histogram == [1, 1, 1]
    bad = wandb.Histogram(np_histogram=([1, 2], [0, 1]))
    assert wandb.Histogram(object()).counts == [] and wandb.Histogram(num_bins=9999).counts == []
    run = runstream.init(settings=offline_settings(tmp_path))
    with caplog.at_level(logging.WARNING, logger="runstream"):
        for step in range(3):
            run.log({"g": good, "b": bad, "x": 1.0}, step=step)
    run.finish()
    warned = [r.getMessage() for r in caplog.records if "wandb.Histogram" in r.getMessage()]
    assert len(warned) == 1 and "at key 'b' is refused: np_histogram has 2 counts" in warned[0]
    assert run.refused_by_kind == {"media": 3}


def test_no_bins_says_so_and_complex_values_are_refused_not_cut_to_their_real_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import warnings

    import torch

    with pytest.raises(HistogramError, match=r"np_histogram has no bins \(empty counts\)"):
        runstream.Histogram(np_histogram=([], [0.0]))
    complex_inputs = [
        np.array([1 + 2j, 3.0]),
        [1.0, 2j],
        torch.tensor([1 + 1j, 2 + 0j]),
        np.array([1 + 0j]),  # even with no imaginary part: the dtype is complex
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's ComplexWarning would fail here
        for values in complex_inputs:
            with pytest.raises(HistogramError, match="real numbers, not complex"):
                runstream.Histogram(values)
        shim = wandb.Histogram(np.array([1 + 2j]))
    assert shim.counts == []
    run = runstream.init(settings=offline_settings(tmp_path))
    with caplog.at_level(logging.WARNING, logger="runstream"):
        for step in range(2):
            run.log({"c": shim, "x": 1.0}, step=step)
    run.finish()
    warned = [r.getMessage() for r in caplog.records if "wandb.Histogram" in r.getMessage()]
    assert warned == [
        "runstream: wandb.Histogram at key 'c' is refused: Histogram takes real numbers, not "
        "complex ones (converting would drop the imaginary part); log .real, .imag or abs() "
        "of the values (warned once)"
    ]
    assert run.refused_by_kind == {"media": 2}


# --- through Kafka and the sink into ClickHouse ------------------------------------------------
@pytest.mark.integration
def test_histograms_land_in_clickhouse_with_exact_bins_counts_and_steps(
    settings: Settings,
) -> None:
    run = runstream.init(settings=settings, project="hist")
    rng = np.random.default_rng(7)
    expected = {}
    for step in (0, 10, 20):
        values = rng.normal(size=500)
        values[:5] = np.nan
        h = runstream.Histogram(values, num_bins=16)
        expected[step] = h
        run.log({"loss": float(step), "weights/fc": h}, step=step)
    given_hist = runstream.Histogram(np_histogram=([3, 0.5], [-1.0, 0.0, 2.5]))
    run.log({"custom": given_hist}, step=25)
    run.finish()

    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.histograms") == 4)
    rows = records_of(
        settings,
        f"SELECT name, step, bins, counts FROM {db}.histograms WHERE run_id = {{r:String}} "
        "ORDER BY step",
        r=run.id,
    )
    assert [(r["name"], r["step"]) for r in rows] == [
        ("weights/fc", 0),
        ("weights/fc", 10),
        ("weights/fc", 20),
        ("custom", 25),
    ]
    for row in rows[:3]:
        h = expected[row["step"]]
        assert row["bins"] == h.bins and row["counts"] == [float(c) for c in h.counts]
        assert sum(row["counts"]) == 495
    assert rows[3]["bins"] == [-1.0, 0.0, 2.5] and rows[3]["counts"] == [3.0, 0.5]
    # The metrics of the same steps are where they always were.
    assert scalar(
        settings,
        f"SELECT groupArray(step) FROM (SELECT step FROM {db}.metrics "
        "WHERE name = 'loss' ORDER BY step)",
    ) == [0, 10, 20]


@pytest.mark.integration
def test_stored_counts_sum_to_the_finite_values_for_generated_arrays(settings: Settings) -> None:
    """The property above, through Kafka, the sink and ClickHouse: one run per example, one
    sink for all of them."""
    from hypothesis import HealthCheck

    from runstream.sinks.consumer import Sink

    db = settings.clickhouse_database
    sink = Sink(settings)
    arrays = hnp.arrays(
        np.float64,
        st.integers(0, 300),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    )

    @hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(arrays, min_size=1, max_size=5), st.integers(1, MAX_BINS))
    def check(values: list[np.ndarray], bins: int) -> None:
        run = runstream.init(settings=settings, project="hist-property")
        for step, array in enumerate(values):
            run.log({"v": runstream.Histogram(array, num_bins=bins)}, step=step)
        run.finish()
        count = f"SELECT count() FROM {db}.histograms WHERE run_id = '{run.id}'"
        sink_until(settings, lambda c: scalar(settings, count) == len(values), sink=sink)
        stored = records_of(settings, f"SELECT step, bins, counts FROM {db}.histograms "
                            "WHERE run_id = {r:String} ORDER BY step", r=run.id)  # fmt: skip
        for row, array in zip(stored, values, strict=True):
            assert sum(row["counts"]) == int(np.isfinite(array).sum())
            assert len(row["bins"]) == len(row["counts"]) + 1 == bins + 1
            assert all(a <= b for a, b in zip(row["bins"], row["bins"][1:], strict=False))
            assert row["bins"][0] < row["bins"][-1]

    try:
        check()
    finally:
        sink.close()


# --- the processors ----------------------------------------------------------------------------
def histogram_event(run_id: str, seq: int, step: int) -> bytes:
    event = sample_event("histogram_logged", seq=seq, run_id=run_id)
    event["body"] = {"step": step, "histograms": {"w": {"bins": [0, 1, 2], "counts": [4, 1]}}}
    return encode(event)


def test_the_processors_ignore_histogram_logged_without_dead_letters() -> None:
    agg, outputs = aggregator()
    positions = agg.process(batch(metrics("a", 0, 0, 1.0), histogram_event("a", 1, 0),
                                  histogram_event("a", 2, 1), metrics("a", 3, 1, 0.5)))  # fmt: skip
    assert positions == {0: 3}
    assert outputs.to(Topics("t").dead_letters) == []
    assert agg.stats.dead_letters == 0 and agg.stats.failed_runs == 0
    assert agg.stats.events == 4
    entry = agg.entry("vision\x1fa")
    assert entry is not None
    assert entry["run"]["last_seq"] == 3 and entry["run"]["last_step"] == 1
    assert sorted(entry["summaries"]) == ["acc", "loss"]  # no summary for a histogram
    assert entry["summaries"]["loss"]["count"] == 2


def test_a_step_of_histograms_only_counts_where_a_resumed_run_goes_on(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings, id="hist-resume")
    run.log({"loss": 1.0}, step=3)
    run.log({"w": runstream.Histogram([1.0, 2.0])}, step=7)
    run.finish()
    again = runstream.init(settings=settings, id="hist-resume", resume="allow")
    assert again.step == 8
    again.finish()
