"""Body builders: what the worker calls, on its own thread, to turn a queued call into the body
of an event (``None`` when nothing is left to send)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from runstream.producers.values import flatten_metrics
from runstream.schemas.codec import json_safe_metrics

if TYPE_CHECKING:
    from runstream.producers.mappings import RunSummary
    from runstream.producers.run import Run


def metrics_body(step: int, data: dict[str, Any], run: Run) -> dict[str, Any] | None:
    # Training loops log the same names every step: once a set of names was checked, the same
    # names with finite float values (one C-level sum says so) need no per-name work.
    if data.keys() == run._checked_names and _finite_floats(data.values()):
        run.summary._observe(data, step)
        return {"step": step, "metrics": data}
    metrics = flatten_metrics(data, run._refusals)
    if metrics is data:
        run._checked_names = set(data)
    if not metrics:
        return None
    run.summary._observe(metrics, step)
    return {"step": step, "metrics": json_safe_metrics(metrics)}


_FLOATS = {float}


def _finite_floats(values: Any) -> bool:
    # Exactly float (not bool, not numpy or torch scalars), then one C-level sum: inf - inf
    # and nan - nan are nan, so the difference is 0.0 only when every value is finite.
    if set(map(type, values)) != _FLOATS:
        return False
    total = sum(values)
    return bool(total - total == 0.0)


def static_body(body: dict[str, Any]) -> dict[str, Any]:
    return body


def final_summary_body(summary: RunSummary) -> dict[str, Any] | None:
    final = summary._final()  # explicit keys only; derived ones are computed downstream
    return {"summary": final} if final else None


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "executable": sys.executable,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
    }
    env.update(_git_info())
    return env


def _git_info() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=2, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit,
        "git_branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "git_remote": git("config", "--get", "remote.origin.url"),
        "git_dirty": None if status is None else bool(status),
    }
