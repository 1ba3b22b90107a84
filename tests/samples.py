"""One realistic event of every type, shared by the schema and integration tests."""

from __future__ import annotations

import copy
import math
from typing import Any

from runstream.schemas import event_dict, json_safe_metrics, uuid7

PRODUCER = {"sdk": "runstream-python", "version": "0.1.0", "host": "gpu-01", "pid": 4242}

BODIES: dict[str, dict[str, Any]] = {
    "run_started": {
        "name": "résnet-50 🚀",
        "config": {
            "lr": 0.001,
            "layers": [64, 128],
            "optim": {"name": "adam", "betas": [0.9, 0.999]},
        },
        "tags": ["baseline", "ünïcode"],
        "group": "sweep-1",
        "job_type": "train",
        "notes": "first try",
        "environment": {
            "python": "3.11.7",
            "platform": "Linux-6.1-x86_64",
            "hostname": "gpu-01",
            "executable": "/usr/bin/python3",
            "argv": ["train.py", "--lr", "0.001"],
            "cwd": "/home/me",
            "git_commit": "0" * 40,
            "git_branch": "main",
            "git_remote": None,
            "git_dirty": False,
        },
    },
    "config_updated": {"config": {"batch_size": 256, "schedule": None}},
    "metrics_logged": {
        "step": 7,
        "metrics": json_safe_metrics(
            {
                "loss": math.nan,
                "grad/norm": math.inf,
                "grad/min": -math.inf,
                "train/accuracy": 0.875,
                "损失/验证": 1.5e-300,
                "emoji 🎯 name": -0.0,
            }
        ),
    },
    "summary_updated": {"summary": {"best_acc": 0.91, "note": "peak at epoch 3"}},
    "system_metrics": {"metrics": {"cpu.percent": 93.5, "gpu.0.temp": 71.0, "mem.rss": 1.5e9}},
    "tags_updated": {"tags": ["baseline", "promoted"]},
    "alert_raised": {"title": "Loss spiked", "text": "loss > 10 at step 7", "level": "warn"},
    "heartbeat": {"step": 7},
    "run_resumed": {"step": 8},
    "artifact_logged": {
        "name": "model.pt",
        "type": "model",
        "digest": "sha256:" + "ab" * 32,
        "size": 123456789,
        "uri": "s3://bucket/runs/abc/model.pt",
        # The optional fields of 0.2 (wandb.Artifact, aliases, use_artifact).
        "aliases": ["best", "v3"],
        "metadata": {"epoch": 3, "val": {"acc": 0.91}},
        "description": "best checkpoint",
        "files": [
            {
                "path": "model.pt",
                "digest": "sha256:" + "ab" * 32,
                "size": 123456789,
                "ref": "s3://bucket/runs/abc/model.pt",
            }
        ],
        "file_count": 1,
        "use": False,
    },
    "metric_defined": {
        "name": "val/*",
        "summary": "min",
        "step_metric": "epoch",
        "step_sync": True,
        "goal": "minimize",
        "hidden": False,
    },
    "run_updated": {"name": "résnet-50 renamed", "notes": "second try"},
    "run_finished": {"exit_code": 0, "status": "finished"},
    "histogram_logged": {
        "step": 7,
        "histograms": {"gradients/fc.weight": {"bins": [-1.0, 0.0, 1.0], "counts": [3, 5]}},
    },
}


def sample_event(type_name: str, seq: int = 0, run_id: str = "abc123") -> dict[str, Any]:
    return event_dict(
        id=uuid7(),
        type=type_name,
        project="vision",
        run_id=run_id,
        seq=seq,
        ts="2026-11-28T19:00:00.123456Z",
        producer=PRODUCER,
        body=copy.deepcopy(BODIES[type_name]),
    )


def same(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN and -0.0 keeps its sign."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
