"""wandb's artifact calls on runstream: ``wandb.Artifact`` (it is :class:`runstream.Artifact`),
``wandb.log_artifact``, ``wandb.use_artifact``, ``wandb.save``, ``wandb.log_code``, each on the
current run (``producers/artifacts.py``; docs/sdk.md "Artifacts"). Without a run: one warning,
nothing recorded, never an exception (counted in ``runstream.no_run_calls``). ``aliases`` given as
one ``str`` is one alias.
"""

from __future__ import annotations

import logging
from typing import Any

from runstream.producers import active
from runstream.producers.artifacts import Artifact
from runstream.wandb._norun import no_run

logger = logging.getLogger("runstream")

__all__ = ["Artifact", "log_artifact", "log_code", "save", "use_artifact"]


def _run(call: str) -> Any:
    current = active.run
    if current is None:
        no_run(call)
    return current


def log_artifact(
    artifact_or_path: Any,
    name: str | None = None,
    type: str | None = None,
    aliases: list[str] | str | None = None,
    **_: Any,
) -> Any:
    """``wandb.log_artifact``: :meth:`runstream.Run.log_artifact` on the current run."""
    current = _run("log_artifact")
    return (
        None
        if current is None
        else current.log_artifact(artifact_or_path, name, type, as_aliases(aliases))
    )


def use_artifact(
    artifact_or_name: Any,
    type: str | None = None,
    aliases: list[str] | str | None = None,
    **_: Any,
) -> Any:
    """``wandb.use_artifact``: :meth:`runstream.Run.use_artifact` on the current run."""
    current = _run("use_artifact")
    return (
        None
        if current is None
        else current.use_artifact(artifact_or_name, type, as_aliases(aliases))
    )


def as_aliases(aliases: Any) -> Any:
    """A lone ``str`` is one alias (``aliases="best"``), not its characters."""
    return [aliases] if isinstance(aliases, str) else aliases


def save(glob_str: Any = None, base_path: Any = None, policy: str = "live") -> bool:
    """``wandb.save(glob_str, base_path=None, policy="live")``: the matching files as a
    ``run_files`` artifact of the current run (read at the call)."""
    current = _run("save")
    if current is None or glob_str is None:
        return False
    return bool(current.save(glob_str, base_path, policy))


def log_code(root: Any = ".", name: str | None = None, **fns: Any) -> Any:
    """``wandb.log_code``: :meth:`runstream.Run.log_code` on the current run."""
    current = _run("log_code")
    return None if current is None else current.log_code(root, name, **fns)
