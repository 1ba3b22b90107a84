"""Turning logged values into schema values (pure logic, no services)."""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from pathlib import Path

import pytest

from runstream.producers.values import Refusals, flatten_metrics, to_float, to_json


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Optim:
    name: str
    lr: float


def test_numbers_of_every_kind_become_floats() -> None:
    np = pytest.importorskip("numpy")
    assert to_float(3) == 3.0
    assert to_float(2.5) == 2.5
    assert to_float(np.float32(1.5)) == 1.5
    assert to_float(np.int64(7)) == 7.0
    assert to_float(np.array(4.0)) == 4.0
    assert to_float(10**400) is None  # no float holds it: refused, not +inf
    assert to_float(True) is None
    assert to_float("1.0") is None
    assert to_float(np.array([1.0, 2.0])) is None


def test_nested_dicts_flatten_and_bad_values_are_refused_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = Refusals()
    data = {"train": {"loss": 1, "acc": 0.5}, "note": "hello", "ok": float("nan")}
    with caplog.at_level(logging.WARNING, logger="runstream"):
        for _ in range(3):
            flat = flatten_metrics(data, refusals)
    assert list(flat) == ["train/loss", "train/acc", "ok"]
    assert math.isnan(flat["ok"])
    assert refusals.count == 3
    assert len([r for r in caplog.records if "note" in r.getMessage()]) == 1


def test_config_values_become_json() -> None:
    np = pytest.importorskip("numpy")
    refusals = Refusals()
    config = {
        "path": Path("/data/x"),
        "optim": Optim("adam", 1e-3),
        "color": Color.RED,
        "weights": np.arange(3),
        "tags": {"b", "a"},
        "inf": math.inf,
        "obj": object(),
    }
    out = to_json(config, refusals)
    assert out["path"] == "/data/x"
    assert out["optim"] == {"name": "adam", "lr": 1e-3}
    assert out["color"] == "red"
    assert out["weights"] == [0, 1, 2]
    assert out["tags"] == ["a", "b"]
    assert out["inf"] == "Infinity"  # as metrics spell it
    assert out["obj"].startswith("<object object")
    assert refusals.count == 1
