"""wandb media runstream does not store yet: built from any arguments without an exception,
refused when logged with one warning per key naming the type, and counted."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runstream
from runstream import wandb
from tests.test_sdk_local import of_type, offline_settings, spooled

MEDIA = ["Image", "Audio", "Video", "Table", "Html", "Object3D", "Molecule", "Plotly", "Graph"]

# What wandb scripts pass to each (wandb 0.31's signatures), and some nonsense.
ARGUMENTS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    ((np.zeros((4, 4, 3), dtype=np.uint8),), {"caption": "a sample", "mode": "RGB"}),
    ((np.zeros(16000),), {"sample_rate": 16000, "caption": "speech"}),
    (("path/that/does/not/exist.mp4",), {"fps": 4, "format": "gif"}),
    (("<b>hi</b>",), {"inject": False}),
    ((), {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}),
    ((object(), None, 3.5, b"bytes"), {"unknown": object(), "boxes": {"x": 1}}),
]


@pytest.mark.parametrize("name", MEDIA)
def test_every_media_type_is_built_from_any_arguments(name: str) -> None:
    kind = getattr(wandb, name)
    for args, kwargs in ARGUMENTS:
        made = kind(*args, **kwargs)
        assert repr(made) == f"<wandb.{name}: not stored by runstream yet>"
    assert kind.media_label == f"wandb.{name}"


def test_a_table_is_built_and_changed_like_wandbs() -> None:
    table = wandb.Table(columns=["step", "text"])
    table.add_data(0, "a")
    table.add_data(1, "b")
    table.add_column("score", [0.5, 0.7])
    assert table.columns == ["step", "text", "score"]
    assert table.data == [[0, "a", 0.5], [1, "b", 0.7]]
    assert table.get_column("text") == ["a", "b"] and table.get_column("missing") == []
    assert table.get_index() == [0, 1] and list(table.iterrows())[1] == (1, [1, "b", 0.7])
    assert wandb.Table(data=[[1, 2]]).columns == ["c0", "c1"]
    assert wandb.Table(data=5).data == []  # not rows: kept empty, no exception
    table.add_column("broken", object())
    table.add_computed_columns(lambda ndx, row: {})
    table.cast("step", "int")


def test_each_media_key_is_refused_with_one_warning_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        for step in range(3):
            run.log(  # a run of runstream's own: wandb.log would need wandb.init's run
                {
                    "samples": wandb.Image(np.zeros((2, 2))),
                    "more": wandb.Image("x.png"),
                    "eval": {"table": wandb.Table(columns=["a"]), "acc": 0.5},
                    "clip": wandb.Audio(np.zeros(8), sample_rate=8),
                    "loss": 1.0 / (step + 1),
                },
                step=step,
            )
    run.finish()
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert warnings == [
        "runstream: wandb.Audio at key 'clip' is not stored by runstream yet; refused "
        "(warned once)",
        "runstream: wandb.Image at key 'more' is not stored by runstream yet; refused "
        "(warned once)",
        "runstream: wandb.Image at key 'samples' is not stored by runstream yet; refused "
        "(warned once)",
        "runstream: wandb.Table at key 'eval/table' is not stored by runstream yet; refused "
        "(warned once)",
    ]
    assert run.refused_by_kind == {"media": 12}
    metrics = [e["body"] for e in of_type(spooled(settings, run.id), "metrics_logged")]
    assert metrics == [
        {"step": s, "metrics": {"eval/acc": 0.5, "loss": 1.0 / (s + 1)}} for s in range(3)
    ]


def test_media_alone_or_in_a_pending_step_never_raises(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    for name in MEDIA:
        run.log({name: getattr(wandb, name)()}, commit=False)
    run.log({"x": 1.0})
    run.log({"v": wandb.Video(object())})  # alone: no metrics event, the step still moves
    run.log({"y": 2.0})
    run.finish()
    assert run.refused_by_kind == {"media": len(MEDIA) + 1}
    metrics = [e["body"] for e in of_type(spooled(settings, run.id), "metrics_logged")]
    assert metrics == [{"step": 0, "metrics": {"x": 1.0}}, {"step": 2, "metrics": {"y": 2.0}}]


def test_a_list_of_media_is_refused_as_media_once_per_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """wandb logs ``[wandb.Image(...), ...]`` as a gallery: refused as media (not as a metric
    that "must be a number, not list"), one warning per key, counted at each log."""
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        for step in range(2):
            run.log(
                {
                    "gallery": [wandb.Image(np.zeros((2, 2))), wandb.Image("x.png")],
                    "eval": {"clips": (wandb.Audio(np.zeros(8), sample_rate=8),)},
                    "plain": [1.0, 2.0],  # not media: the metric refusal, as before
                    "loss": 0.5,
                },
                step=step,
            )
    run.finish()
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert warnings[:2] == [
        "runstream: a list of wandb.Audio at key 'eval/clips' is not stored by runstream "
        "yet; refused (warned once)",
        "runstream: a list of wandb.Image at key 'gallery' is not stored by runstream yet; "
        "refused (warned once)",
    ]
    assert len(warnings) == 3 and "plain" in warnings[2] and "not list" in warnings[2]
    assert run.refused_by_kind == {"media": 4, "metric": 2}
    metrics = [e["body"] for e in of_type(spooled(settings, run.id), "metrics_logged")]
    assert metrics == [{"step": s, "metrics": {"loss": 0.5}} for s in range(2)]
