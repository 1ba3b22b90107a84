"""Issue 10, items 1-4 and 7 (the SDK's part): each example, with the value it must store.

Offline runs, read back from their spool: every spooled event is decoded with the schema, so an
event the sink would dead-letter fails here too.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

import runstream
from runstream.producers.values import CYCLE_MARKER, UNREPRESENTABLE
from runstream.schemas.limits import MAX_EVENT_BYTES
from tests.test_sdk_local import of_type, offline_settings, spooled


def metric_points(events: list[dict[str, Any]]) -> list[tuple[int, str, Any]]:
    return [
        (e["body"]["step"], name, value)
        for e in of_type(events, "metrics_logged")
        for name, value in e["body"]["metrics"].items()
    ]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- item 1: steps ------------------------------------------------------------------------------
def test_numpy_and_torch_like_integer_steps_are_steps(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")

    class TorchLikeInt:  # what torch.tensor(3) offers: __index__
        def __index__(self) -> int:
            return 3

    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    for step in np.arange(3):
        run.log({"loss": 1.0}, step=step)
    run.log({"loss": 2.0}, step=np.uint64(7))
    run.log({"loss": 3.0}, step=TorchLikeInt())
    result = run.finish()
    assert result.ok and run.refused == 0
    points = metric_points(spooled(settings, run.id))
    assert points == [(0, "loss", 1.0), (1, "loss", 1.0), (2, "loss", 1.0), (7, "loss", 2.0),
                      (3, "loss", 3.0)]  # fmt: skip
    assert all(type(step) is int for step, _, _ in points)


@pytest.mark.parametrize(
    "step",
    [1.5, "7", None.__class__, True, -1, 2**63, 10**30, 2.0],
    ids=["float", "str", "type", "bool", "negative", "int64+1", "huge", "float-integral"],
)
def test_steps_that_are_not_int64_integers_are_refused_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, step: Any
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        for _ in range(3):
            run.log({"loss": 1.0}, step=step)
            if isinstance(step, int) and not isinstance(step, bool):
                step += 1 if step > 0 else -1  # another value of the same kind: no new warning
        run.log({"loss": 2.0})
    run.finish()
    assert metric_points(spooled(settings, run.id)) == [(0, "loss", 2.0)]
    assert len(warnings_of(caplog)) == 1 and "step" in warnings_of(caplog)[0]
    assert run.refused == 3 and run.refused_by_kind == {"step": 3}


@pytest.mark.parametrize(
    ("data", "commit"),
    [
        ([("x", 1.0)], True),  # what dict() takes: pairs are stored
        ([1, 2], True),
        ("x", True),
        (None, True),
        (42, True),
        ({"x": 1.0}, "yes"),  # a truthy object: committed
        ({"x": 1.0}, type("Bad", (), {"__bool__": lambda self: 1 / 0})()),
    ],
    ids=["pairs", "list", "str", "none", "int", "truthy-commit", "commit-bool-raises"],
)
def test_log_never_raises_whatever_its_arguments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, data: Any, commit: Any
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log(data, commit=commit)
        run.log({"after": 1.0})
    run.finish()
    points = metric_points(spooled(settings, run.id))
    assert (points[-1][1], points[-1][2]) == ("after", 1.0)
    if (isinstance(data, dict) and commit == "yes") or data == [("x", 1.0)]:
        assert points[0] == (0, "x", 1.0) and run.refused == 0
    else:
        assert run.refused == 1 and len(warnings_of(caplog)) == 1


def test_keys_of_any_type_and_a_raising_str(tmp_path: Path) -> None:
    class NoStr:
        def __str__(self) -> str:
            raise RuntimeError("no")

    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    run.log({1: 1.0, (2, 3): 2.0, NoStr(): 3.0, None: 4.0})
    run.finish()
    assert metric_points(spooled(settings, run.id)) == [
        (0, "1", 1.0), (0, "(2, 3)", 2.0), (0, "None", 4.0)]  # fmt: skip
    assert run.refused == 1


# --- item 2: a valid step is data ---------------------------------------------------------------
def test_mixing_step_less_and_explicit_steps_keeps_every_point(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    run.log({"a": 1.0})  # 0
    run.log({"b": 1.0}, step=5)
    run.log({"a": 2.0})  # 6: after the highest step
    run.log({"b": 2.0}, step=2)  # lower: stored
    run.log({"a": 3.0})  # 7
    assert run.step == 8
    run.finish()
    assert metric_points(spooled(settings, run.id)) == [
        (0, "a", 1.0), (5, "b", 1.0), (6, "a", 2.0), (2, "b", 2.0), (7, "a", 3.0)]  # fmt: skip
    assert run.refused == 0


def test_two_threads_with_their_own_step_counters_both_land(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)

    def train(name: str) -> None:
        for step in range(500):
            run.log({name: float(step)}, step=step)

    threads = [threading.Thread(target=train, args=(n,)) for n in ("gen", "disc")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.finish()
    points = metric_points(spooled(settings, run.id))
    for name in ("gen", "disc"):
        assert sorted((s, v) for s, n, v in points if n == name) == [
            (s, float(s)) for s in range(500)
        ]


def test_log_after_finish_always_warns_even_after_a_refused_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = runstream.init(settings=offline_settings(tmp_path))
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log({"x": 1.0}, step=-1)
        run.finish()
        run.log({"x": 1.0})
        run.log({"x": 1.0})
    messages = warnings_of(caplog)
    assert len(messages) == 2 and "after finish()" in messages[1]
    assert run.refused == 3


# --- item 3: values the encoder cannot take -----------------------------------------------------
@pytest.mark.parametrize("big", [2**64, 2**70, -(2**63) - 1])
def test_ints_beyond_64_bits_in_config_are_stored_as_strings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, big: int
) -> None:
    settings = offline_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run = runstream.init(settings=settings, name="big", config={"lr": 0.1, "x": big})
        run.config["y"] = {"deep": [big]}
        run.summary["z"] = big
    run.finish()
    events = spooled(settings, run.id)
    started = of_type(events, "run_started")[0]["body"]
    assert started["name"] == "big" and started["config"] == {"lr": 0.1, "x": str(big)}
    assert started["environment"]["python"]
    assert of_type(events, "config_updated")[0]["body"]["config"] == {"y": {"deep": [str(big)]}}
    assert of_type(events, "summary_updated")[0]["body"]["summary"] == {"z": str(big)}
    assert run.config["x"] == str(big)
    messages = warnings_of(caplog)
    assert len(messages) == 3 and "config.x" in messages[0] and "decimal string" in messages[0]
    assert "config.y.deep" in messages[1] and "summary.z" in messages[2]


def test_64_bit_ints_and_floats_stay_numbers_of_their_kind(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    settings = offline_settings(tmp_path)
    config = {"u": 2**64 - 1, "i": -(2**63), "one": 1.0, "big": 1e20, "np64": np.float64(1.0),
              "np32": np.float32(0.5), "npint": np.int64(3), "neg0": -0.0}  # fmt: skip
    run = runstream.init(settings=settings, config=config)
    run.finish()
    raw = spool_bytes(settings, run.id)
    assert b'"one":1.0' in raw and b'"big":1e+20' in raw and b'"np64":1.0' in raw
    started = of_type(spooled(settings, run.id), "run_started")[0]["body"]["config"]
    assert started == {"u": 2**64 - 1, "i": -(2**63), "one": 1.0, "big": 1e20, "np64": 1.0,
                       "np32": 0.5, "npint": 3, "neg0": -0.0}  # fmt: skip
    assert type(started["one"]) is float and type(started["npint"]) is int
    assert run.refused == 0


def spool_bytes(settings: Any, run_id: str) -> bytes:
    from runstream.producers.spool import RunSpool, runs_dir

    spool = RunSpool.open_existing(runs_dir(settings.dir) / run_id)
    assert spool is not None
    return b"\n".join(data for _, data in spool.read_from(0))


def test_a_config_that_contains_itself_and_a_raising_repr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise ValueError("no repr")

    config: dict[str, Any] = {"lr": 0.1, "bad": BadRepr()}
    config["self"] = config
    looped: list[Any] = [1]
    looped.append(looped)
    config["list"] = looped
    settings = offline_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run = runstream.init(settings=settings, config=config)
    run.finish()
    started = of_type(spooled(settings, run.id), "run_started")[0]["body"]["config"]
    assert started == {"lr": 0.1, "bad": UNREPRESENTABLE.format("BadRepr"),
                       "self": CYCLE_MARKER, "list": [1, CYCLE_MARKER]}  # fmt: skip
    assert run.refused == 3 and len(warnings_of(caplog)) == 3


def test_a_metric_integer_no_float_holds_is_refused_not_infinity(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log({"x": 10**400, "y": 2**64})
    run.finish()
    assert metric_points(spooled(settings, run.id)) == [(0, "y", float(2**64))]
    (message,) = warnings_of(caplog)
    assert "'x'" in message and "too large for a 64-bit float" in message


def test_names_that_are_not_unicode_text_cost_only_themselves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = "loss\ud800"
    settings = offline_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run = runstream.init(settings=settings, name=bad, notes="n\udcff", tags=["ok", bad],
                             config={bad: 1.0, "v": bad})  # fmt: skip
        for step in range(3):
            run.log({bad: 1.0, "good": float(step)})
        run.summary[bad] = 2.0
        run.alert(bad, bad)
    result = run.finish()
    assert result.ok
    events = spooled(settings, run.id)  # every event decodes
    started = of_type(events, "run_started")[0]["body"]
    assert started["name"] == "loss\\ud800" and started["notes"] == "n\\udcff"
    assert started["tags"] == ["ok", "loss\\ud800"]
    assert started["config"] == {"loss\\ud800": 1.0, "v": "loss\\ud800"}
    assert metric_points(events) == [(0, "good", 0.0), (1, "good", 1.0), (2, "good", 2.0)]
    assert of_type(events, "summary_updated")[0]["body"]["summary"] == {"loss\\ud800": 2.0}
    assert of_type(events, "alert_raised")[0]["body"]["title"] == "loss\\ud800"
    assert any("not valid Unicode" in m for m in warnings_of(caplog))


def test_a_surrogate_in_argv_costs_nothing_but_its_spelling(tmp_path: Path) -> None:
    import sys

    settings = offline_settings(tmp_path)
    saved = sys.argv
    sys.argv = ["train.py", "--data=/d/\udcff"]  # undecodable bytes, as Python spells them
    try:
        run = runstream.init(settings=settings, config={"lr": 0.1})
    finally:
        sys.argv = saved
    run.finish()
    started = of_type(spooled(settings, run.id), "run_started")[0]["body"]
    assert started["environment"]["argv"] == ["train.py", "--data=/d/\\udcff"]
    assert started["config"] == {"lr": 0.1}
    assert run.refused == 1


def test_init_takes_any_config_and_text_arguments(tmp_path: Path) -> None:
    import argparse

    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings, name=5, config=argparse.Namespace(lr=0.1),
                         tags=["", "x" * 600, "fine", 3], group=7)  # type: ignore[arg-type]  # fmt: skip
    other = runstream.init(settings=settings, config=[1, 2])  # type: ignore[arg-type]
    run.finish()
    other.finish()
    started = of_type(spooled(settings, run.id), "run_started")[0]["body"]
    assert started["name"] == "5" and started["group"] == "7"
    assert started["config"] == {"lr": 0.1} and started["tags"] == ["fine", "3"]
    assert of_type(spooled(settings, other.id), "run_started")[0]["body"]["config"] == {}


def test_duplicate_names_after_flattening_keep_the_later_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings, config={1: "int", "1": "str"})
    with caplog.at_level(logging.WARNING, logger="runstream"):
        for _ in range(2):
            run.log({"a": {"b": 1.0}, "a/b": 2.0, 5: 3.0, "5": 4.0})
    run.finish()
    events = spooled(settings, run.id)
    raw = spool_bytes(settings, run.id)
    assert raw.count(b'"a/b"') == 2  # once per event: never twice in one
    assert metric_points(events) == [(0, "a/b", 2.0), (0, "5", 4.0), (1, "a/b", 2.0),
                                     (1, "5", 4.0)]  # fmt: skip
    assert of_type(events, "run_started")[0]["body"]["config"] == {"1": "str"}
    assert len([m for m in warnings_of(caplog) if "given twice" in m]) == 3
    assert run.refused_by_kind["duplicate"] == 5


# --- item 4: size -------------------------------------------------------------------------------
def test_a_50_mb_config_value_is_left_out_and_the_rest_of_run_started_is_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run = runstream.init(settings=settings, name="huge", tags=["t"],
                             config={"lr": 0.1, "blob": "x" * 50_000_000})  # fmt: skip
    run.finish()
    events = spooled(settings, run.id)
    started = of_type(events, "run_started")[0]["body"]
    assert started["name"] == "huge" and started["tags"] == ["t"]
    assert started["config"] == {"lr": 0.1} and started["environment"]["python"]
    (message,) = warnings_of(caplog)
    assert "'blob'" in message and "50,000,011 bytes" in message and "left out" in message
    assert "fewer values" not in message
    assert all(len(orjson.dumps(e)) <= MAX_EVENT_BYTES for e in events)


def test_a_config_over_the_limit_follows_run_started_in_config_updated_events(
    tmp_path: Path,
) -> None:
    settings = offline_settings(tmp_path)
    config = {f"key_{i}": "v" * 1000 for i in range(3000)}  # ~3 MB
    run = runstream.init(settings=settings, name="wide", config=config)
    run.config.update({f"more_{i}": "w" * 1000 for i in range(2000)})
    run.finish()
    events = spooled(settings, run.id)
    started = of_type(events, "run_started")[0]["body"]
    assert started["name"] == "wide" and started["config"]
    merged: dict[str, Any] = dict(started["config"])
    for event in of_type(events, "config_updated"):
        merged.update(event["body"]["config"])
    assert merged == {**config, **{f"more_{i}": "w" * 1000 for i in range(2000)}}
    assert all(len(orjson.dumps(e)) <= MAX_EVENT_BYTES for e in events)
    assert run.refused == 0


def test_a_summary_over_the_limit_is_split(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    keys = {f"summary/key/number/{i}": float(i) for i in range(60_000)}
    run.summary.update(keys)
    run.finish()
    events = spooled(settings, run.id)
    updates = of_type(events, "summary_updated")
    merged = {k: v for e in updates for k, v in e["body"]["summary"].items()}
    assert merged == keys and len(updates) > 2
    assert all(len(orjson.dumps(e)) <= MAX_EVENT_BYTES for e in events)


def test_an_alert_text_and_notes_over_the_limit_are_cut_not_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run = runstream.init(settings=settings, name="n", notes="n" * 2_000_000)
        run.alert("big", "t" * 2_000_000)
    run.finish()
    events = spooled(settings, run.id)
    started = of_type(events, "run_started")[0]["body"]
    assert started["name"] == "n" and started["notes"].startswith("nnnn")
    assert "[cut: 2,000,002 bytes" in started["notes"]
    assert of_type(events, "alert_raised")[0]["body"]["title"] == "big"
    assert all(len(orjson.dumps(e)) <= MAX_EVENT_BYTES for e in events)
    assert len(warnings_of(caplog)) == 2


# --- item 7 (the SDK's part): summary reads ----------------------------------------------------
def test_summary_reads_see_what_was_logged_before_them(tmp_path: Path) -> None:
    run = runstream.init(settings=offline_settings(tmp_path))
    for i in range(200):
        run.log({"x": 1.0 + i})
        assert run.summary["x"] == 1.0 + i
    run.define_metric("val", summary="min")
    run.log({"val": 0.5})
    run.log({"val": 0.7})
    assert run.summary["val"] == 0.5 and dict(run.summary)["x"] == 200.0
    for i in range(3):  # a lower step moves no counter of the step: still seen by the read
        run.log({"w": -1.0 - i}, step=i)
        assert run.summary["w"] == -1.0 - i
    run.log({"x": -1.0}, step=7)  # below x's highest step: as stored, not x's last value
    assert run.summary["x"] == 200.0
    run.log({"y": 1.0}, commit=False)
    run.log({"z": 2.0})
    assert (run.summary["y"], run.summary["z"]) == (1.0, 2.0)
    run.finish()
    assert run.summary["w"] == -3.0
    disabled = runstream.init(settings=offline_settings(tmp_path, mode="disabled"))
    disabled.log({"x": 1.0})
    assert dict(disabled.summary) == {}
    disabled.finish()


def test_the_final_summary_event_carries_only_explicit_keys(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    plain = runstream.init(settings=settings)
    plain.log({"loss": 1.0})
    plain.finish()
    assert of_type(spooled(settings, plain.id), "summary_updated") == []
    explicit = runstream.init(settings=settings)
    explicit.log({"loss": 1.0})
    explicit.summary["best"] = 0.5
    explicit.summary.update({"epoch": 3})
    explicit.finish()
    final = of_type(spooled(settings, explicit.id), "summary_updated")[-1]["body"]["summary"]
    assert final == {"best": 0.5, "epoch": 3}


def test_an_artifact_the_schema_would_refuse_is_refused_here(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    run.log_artifact("s3://bucket/x", name="n" * 600)
    run.log_artifact("s3://bucket/y", name="ok", type="")
    run.log_artifact("s3://bucket/\udcff", name="fine")
    run.finish()
    artifacts = of_type(spooled(settings, run.id), "artifact_logged")
    assert [a["body"]["name"] for a in artifacts] == ["fine"]
    assert artifacts[0]["body"]["uri"] == "s3://bucket/\\udcff"  # escaped by the worker
    assert run.refused_by_kind == {"artifact": 2, "config": 1}


def test_finish_result_counts_the_refused_values(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings, config={"huge": 2**70})
    run.log({"loss": 1.0, "bad": "text"}, step=1.5)  # a refused step: the whole call
    run.log({"loss": 1.0, "bad": "text", "inf": 10**400})
    result = run.finish()
    assert run.refused_by_kind and result.refused == run.refused == 4
    assert result.ok, "refused values cost themselves, not the run's delivery"


# --- a fresh user's second look: values as at the call, the last step, arrays, arguments --------
def test_values_are_stored_as_they_were_at_the_call_not_later(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    d: dict[str, Any] = {"m": {"v": 0.0}}
    acc = np.zeros(())
    for s in range(1000):
        d["m"]["v"] = float(s)
        acc[...] = s
        run.log({**d, "acc": acc}, step=s)
    z = np.array(1.0)
    run.log({"z": z}, step=1000)
    z += 41
    vec = np.array([0.5])
    run.log({"pending": {"p": vec}}, step=1001, commit=False)  # accumulated: taken now too
    vec[0] = 9.0
    run.log({"more": vec}, step=1001)
    vec[0] = 7.0
    result = run.finish()
    assert result.ok and run.refused == 0
    points = metric_points(spooled(settings, run.id))
    assert [(s, v) for s, n, v in points if n == "m/v"] == [(s, float(s)) for s in range(1000)]
    assert [(s, v) for s, n, v in points if n == "acc"] == [(s, float(s)) for s in range(1000)]
    assert (1000, "z", 1.0) in points
    assert (1001, "pending/p", 0.5) in points and (1001, "more", 9.0) in points


def test_values_that_cannot_be_converted_at_the_call_are_refused_by_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    looped: dict[str, Any] = {"x": 1.0}
    looped["self"] = looped
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log({"a": "text", "loop": looped, "ok": 2.0})
    run.finish()
    assert sorted(metric_points(spooled(settings, run.id))) == [(0, "loop/x", 1.0), (0, "ok", 2.0)]
    assert run.refused_by_kind == {"metric": 2}
    assert any("contains itself" in m for m in warnings_of(caplog))


def test_a_step_less_log_after_the_highest_step_is_refused_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log({"x": 1.0}, step=2**63 - 1)
        run.log({"x": 2.0})
        run.log({"y": 3.0}, commit=False)  # the pending path computes a step too
        run.log({"x": 4.0}, step=5)  # an explicit step still works
    result = run.finish()
    assert metric_points(spooled(settings, run.id)) == [(2**63 - 1, "x", 1.0), (5, "x", 4.0)]
    assert run.refused_by_kind == {"step": 2} and result.refused == 2
    (message,) = warnings_of(caplog)
    assert "2**63-1" in message and "step=" in message


@pytest.mark.parametrize("shape", [(), (1,), (1, 1), (1, 1, 1)])
def test_one_element_arrays_are_metrics(tmp_path: Path, shape: tuple[int, ...]) -> None:
    np = pytest.importorskip("numpy")
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    run.log({"a": np.full(shape, 4.5), "b": np.full(shape, 3, dtype=np.int32)})
    run.finish()
    assert metric_points(spooled(settings, run.id)) == [(0, "a", 4.5), (0, "b", 3.0)]
    assert run.refused == 0


def test_larger_arrays_are_refused_with_their_shape_once_per_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    np = pytest.importorskip("numpy")
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log({"v": np.zeros(3), "ok": 1.0})
        run.log({"v": np.zeros((2, 2)), "ok": 2.0})  # another shape, same name: no new warning
        run.log({"e": np.zeros(0)})
    run.finish()
    assert metric_points(spooled(settings, run.id)) == [(0, "ok", 1.0), (1, "ok", 2.0)]
    assert run.refused_by_kind == {"metric": 3}
    messages = warnings_of(caplog)
    assert len(messages) == 2
    assert "shape (3,)" in messages[0] and "3 elements" in messages[0]
    assert "shape (0,)" in messages[1]


def test_unknown_arguments_to_log_are_ignored_with_one_warning_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log({"x": 1.0}, step=1, extra_kw=1)  # type: ignore[call-arg]
        run.log({"x": 2.0}, step=2, extra_kw=2)  # type: ignore[call-arg]
        run.log({"x": 3.0}, step=3, sync=True)  # type: ignore[call-arg]  # wandb's: silent
        run.log({"x": 4.0}, 4, True, False)  # type: ignore[call-arg]  # sync by position
        run.log({"x": 5.0}, 5, True, None, "more")  # type: ignore[call-arg]
        run.log()  # type: ignore[call-arg]
    run.finish()
    assert [v for _, _, v in metric_points(spooled(settings, run.id))] == [1.0, 2.0, 3.0, 4.0,
                                                                          5.0]  # fmt: skip
    assert run.refused_by_kind == {"argument": 3, "call": 1}
    messages = warnings_of(caplog)
    assert len(messages) == 3 and "'extra_kw'" in messages[0] and "positional" in messages[1]


def test_module_level_calls_without_a_run_warn_once_and_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runstream.producers import active

    monkeypatch.setattr(active, "run", None)
    monkeypatch.setattr(runstream, "no_run_calls", {})
    with caplog.at_level(logging.WARNING, logger="runstream"):
        runstream.log({"x": 1.0})
        runstream.log({"x": 2.0}, step=3, bogus=1)  # type: ignore[call-arg]
        assert runstream.finish() is None
    assert runstream.no_run_calls == {"log": 2, "finish": 1}
    messages = warnings_of(caplog)
    assert len(messages) == 2 and all("call runstream.init() first" in m for m in messages)
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    runstream.log({"x": 3.0}, 7, True, None, extra=1)  # type: ignore[call-arg]
    result = runstream.finish()
    assert result is not None and result.refused == 1
    assert metric_points(spooled(settings, run.id)) == [(7, "x", 3.0)]


def test_every_odd_alert_input_is_changed_out_loud_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.alert("a", level="critical")
        run.alert("b", level=None)  # another bad level: the same warning, counted
        run.alert(42, 3.5, level="WARNING")  # type: ignore[arg-type]
        run.alert("", None, level="error")  # type: ignore[arg-type]  # text None: ""
        run.alert("t" * 2000, "fine")
    run.finish()
    run.alert("late")
    alerts = [e["body"] for e in of_type(spooled(settings, run.id), "alert_raised")]
    assert alerts == [
        {"title": "a", "text": "", "level": "info"},
        {"title": "b", "text": "", "level": "info"},
        {"title": "42", "text": "3.5", "level": "warn"},
        {"title": "(untitled)", "text": "", "level": "error"},
        {"title": "t" * 1024, "text": "fine", "level": "info"},
    ]
    assert run.refused_by_kind == {"alert": 6, "after_finish": 1}
    assert len(warnings_of(caplog)) == 6 and "alert() after finish()" in warnings_of(caplog)[-1]


def test_calls_after_finish_that_change_the_run_are_said_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = runstream.init(settings=offline_settings(tmp_path))
    run.finish()
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.config["lr"] = 0.1
        run.summary["best"] = 1.0
        run.tags = ["t"]
        run.define_metric("x", summary="min")
        run.log_artifact("s3://b/k")
        run.log({"x": 1.0})
    assert run.refused_by_kind == {"after_finish": 6}
    (message,) = warnings_of(caplog)
    assert "a config change after finish() is ignored" in message


def test_fractions_and_decimals_in_config_are_exact_or_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from decimal import Decimal
    from fractions import Fraction

    settings = offline_settings(tmp_path)
    config = {"half": Fraction(1, 2), "third": Fraction(1, 3), "d": Decimal("0.25"),
              "tenth": Decimal("0.1"), "huge": Decimal("1e400")}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run = runstream.init(settings=settings, config=config)
        run.log({"f": Fraction(3, 4), "dec": Decimal("0.5")})
    run.finish()
    events = spooled(settings, run.id)
    started = of_type(events, "run_started")[0]["body"]["config"]
    assert started == {"half": 0.5, "third": "1/3", "d": 0.25, "tenth": "0.1", "huge": "1E+400"}
    assert type(started["half"]) is float and type(started["d"]) is float
    assert metric_points(events) == [(0, "f", 0.75), (0, "dec", 0.5)]
    assert run.refused_by_kind == {"config": 3}
    messages = warnings_of(caplog)
    assert len(messages) == 3 and "config.third" in messages[0] and "'1/3'" in messages[0]


def test_enum_keys_are_the_same_in_config_and_metrics(tmp_path: Path) -> None:
    import enum

    class Color(enum.Enum):
        RED = "red"

    class Mixed(str, enum.Enum):
        BLUE = "blue"

    class Number(enum.Enum):
        ONE = 1

    settings = offline_settings(tmp_path)
    keys = {Color.RED: 1.0, Mixed.BLUE: 2.0, Number.ONE: 3.0}
    run = runstream.init(settings=settings, config=keys)
    run.config.update({Color.RED: 4.0})
    run.log(keys)
    run.finish()
    events = spooled(settings, run.id)
    config = of_type(events, "run_started")[0]["body"]["config"]
    assert config == {"red": 1.0, "blue": 2.0, "Number.ONE": 3.0}
    assert of_type(events, "config_updated")[0]["body"]["config"] == {"red": 4.0}
    assert [n for _, n, _ in metric_points(events)] == list(config)
