"""``runstream.wandb.install()``: make ``import wandb`` anywhere in the process resolve to the
shim, so that libraries calling wandb (transformers' ``WandbCallback``, accelerate's
``WandBTracker``) log to runstream unchanged.

Three things are registered, and :func:`uninstall` takes each back:

1. ``sys.modules`` entries for ``wandb`` and the submodules libraries import (``_modules.py``):
   ``import wandb``, ``from wandb.sdk.lib import RunDisabled`` and
   ``importlib.util.find_spec("wandb")`` (transformers' ``is_wandb_available``) then work.
2. A distribution record named ``wandb`` visible to ``importlib.metadata`` in this process only
   (accelerate's ``is_wandb_available`` asks ``importlib.metadata.metadata("wandb")``), with the
   shim's ``__version__``. It is not installed anywhere: pip and other processes do not see it.
3. Nothing else: no file is written, no environment variable set.

Call it before the library decides whether wandb is there: accelerate decides when
``accelerate.tracking`` is first imported; transformers when the ``Trainer`` is built.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.metadata
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runstream.wandb import _modules

_saved: dict[str, types.ModuleType | None] | None = None
_finder: _WandbMetadataFinder | None = None


class _WandbDistribution(importlib.metadata.Distribution):
    """The ``wandb`` distribution as ``importlib.metadata`` sees it while the shim is installed."""

    def __init__(self, version: str) -> None:
        self._version = version

    def read_text(self, filename: str) -> str | None:
        if filename in ("METADATA", "PKG-INFO"):
            return (
                "Metadata-Version: 2.1\nName: wandb\n"
                f"Version: {self._version}\n"
                "Summary: runstream's wandb shim (runstream.wandb.install())\n"
            )
        if filename == "top_level.txt":
            return "wandb\n"
        return None

    def locate_file(self, path: str | Any) -> Path:
        return Path(__file__).parent / str(path)


class _WandbMetadataFinder(importlib.abc.MetaPathFinder):
    """Finds no module (``sys.modules`` has them); answers ``importlib.metadata`` for wandb."""

    def __init__(self, version: str) -> None:
        self.version = version

    def find_spec(self, *_: Any, **__: Any) -> None:
        return None

    def find_distributions(
        self, context: importlib.metadata.DistributionFinder.Context | None = None
    ) -> Iterable[importlib.metadata.Distribution]:
        name = getattr(context, "name", None) if context is not None else None
        if name is not None and name.lower().replace("-", "_") == "wandb":
            return [_WandbDistribution(self.version)]
        return []


def install() -> types.ModuleType:
    """Make ``import wandb`` (and its submodules) resolve to ``runstream.wandb`` in this process.

    Returns the shim module. Idempotent: a second call changes nothing. What was in
    ``sys.modules`` under those names before (a real wandb) is kept and put back by
    :func:`uninstall`.
    """
    global _saved, _finder
    shim = sys.modules["runstream.wandb"]
    names = {"wandb": shim, **_modules.SUBMODULES}
    if _saved is None:
        _saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(names)
    if _finder is None:
        _finder = _WandbMetadataFinder(shim.__version__)
        sys.meta_path.insert(0, _finder)
    return shim


def uninstall() -> None:
    """Undo :func:`install`: the ``sys.modules`` entries it replaced are restored (or removed),
    and ``importlib.metadata`` no longer reports a wandb distribution. Idempotent."""
    global _saved, _finder
    if _saved is not None:
        for name, previous in _saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        _saved = None
    if _finder is not None:
        with contextlib.suppress(ValueError):  # someone else took it out
            sys.meta_path.remove(_finder)
        _finder = None


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return _saved is not None
