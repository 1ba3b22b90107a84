"""Stand-ins for the wandb names another part of issue 11 implements (``media.py``,
``artifacts.py``): they accept what wandb code builds and calls, record nothing, and warn once,
so that no library raises into a training loop. ``runstream/wandb/__init__.py`` replaces them
with the real ones as soon as those modules exist.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from runstream.producers.metric_defs import warn_once


class Artifact:
    """``wandb.Artifact``: accepted, not recorded yet (one warning when logged)."""

    def __init__(self, name: str, type: str, description: str | None = None,
                 metadata: dict[str, Any] | None = None, **_: Any) -> None:  # fmt: skip
        self.name = name
        self.type = type
        self.description = description
        self.metadata = dict(metadata or {})
        self._dir = tempfile.mkdtemp(prefix="runstream-artifact-")

    def add_file(self, local_path: str, name: str | None = None, **_: Any) -> None:
        return None

    def add_dir(self, local_path: str, name: str | None = None, **_: Any) -> None:
        return None

    def add_reference(self, uri: str, name: str | None = None, **_: Any) -> None:
        return None

    def add(self, obj: Any, name: str, **_: Any) -> None:
        return None

    @contextlib.contextmanager
    def new_file(
        self, name: str, mode: str = "x", encoding: str | None = None
    ) -> Iterator[IO[Any]]:
        path = os.path.join(self._dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, mode.replace("x", "w"), encoding=encoding) as handle:
            yield handle


def log_artifact(artifact_or_path: Any, name: str | None = None, type: str | None = None,
                 aliases: list[str] | None = None, **_: Any) -> None:  # fmt: skip
    """``wandb.log_artifact``: a path is recorded on ``wandb.run``; an Artifact is not yet."""
    import runstream.wandb as shim

    run = shim.__getattr__("run")
    if run is None:
        return
    if isinstance(artifact_or_path, Artifact):
        warn_once("artifact stand-in", "runstream.wandb: wandb.Artifact objects are not "
                  "recorded by this version; the artifact is ignored")  # fmt: skip
        return
    run.log_artifact(artifact_or_path, name, type or "artifact")


def use_artifact(artifact_or_name: Any, *_: Any, **__: Any) -> Any:
    warn_once("use_artifact stand-in", "runstream.wandb: use_artifact() is not recorded by this "
              "version; ignored")  # fmt: skip
    return artifact_or_name


def watch(*_: Any, **__: Any) -> None:
    """``wandb.watch``: gradient and parameter histograms are not collected by this version."""
    return None
