"""Body builders: what the worker calls, on its own thread, to turn a queued call into the body
of an event (``None`` when nothing is left to send)."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from runstream.producers.values import MAX_NAME_LENGTH, flatten_metrics
from runstream.schemas.codec import json_safe_metrics

if TYPE_CHECKING:
    from runstream.producers.mappings import RunSummary
    from runstream.producers.run import Run


def metrics_body(step: int, data: dict[str, Any], run: Run) -> dict[str, Any] | None:
    # Training loops log the same names every step: once a set of names was checked, the same
    # names with finite float values (one C-level sum says so) need no per-name work.
    if data.keys() == run._checked_names and _finite_floats(data.values()):
        run.summary._observe(data)
        return {"step": step, "metrics": data}
    metrics = flatten_metrics(data, run._refusals)
    if metrics is data:
        run._checked_names = set(data)
    if not metrics:
        return None
    run.summary._observe(metrics)
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


def artifact_body(target: str, name: str | None, kind: str, run: Run) -> dict[str, Any] | None:
    scheme = urlsplit(target).scheme
    if scheme and len(scheme) > 1 and scheme != "file":  # a remote URI: nothing to read here
        hashed = hashlib.sha256(target.encode("utf-8", "surrogatepass")).hexdigest()
        body = {"name": name or target.rstrip("/").rsplit("/", 1)[-1], "type": kind,
                "digest": f"uri-sha256:{hashed}", "size": 0, "uri": target}  # fmt: skip
        return _checked_artifact(body, run)
    path = Path(target.removeprefix("file://")).expanduser()
    try:
        digest, size = _digest(path)
    except OSError as exc:
        run._refusals.refuse(str(path), f"artifact cannot be read: {exc}", "artifact")
        return None
    body = {"name": name or path.name, "type": kind, "digest": f"sha256:{digest}", "size": size,
            "uri": path.resolve().as_uri()}  # fmt: skip
    return _checked_artifact(body, run)


def _checked_artifact(body: dict[str, Any], run: Run) -> dict[str, Any] | None:
    # The schema's limits (a name of 1 to 512 characters, a type of 1 to 128): an artifact
    # outside them would be dead-lettered whole downstream, so say so here instead.
    name, kind = body["name"], body["type"]
    if not (type(name) is str and 0 < len(name) <= MAX_NAME_LENGTH):
        run._refusals.refuse(str(name)[:60], f"an artifact name must have 1 to "
                             f"{MAX_NAME_LENGTH} characters", "artifact")  # fmt: skip
        return None
    if not (type(kind) is str and 0 < len(kind) <= 128):
        run._refusals.refuse(name[:60], "an artifact type must have 1 to 128 characters",
                             "artifact")  # fmt: skip
        return None
    return body


def _digest(path: Path) -> tuple[str, int]:
    """sha256 of a file, or of a directory's files (names and contents, sorted)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files and not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    h = hashlib.sha256()
    size = 0
    for file in files:
        if file is not path:
            h.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    return h.hexdigest(), size


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
