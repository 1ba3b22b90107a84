"""Imports of optional dependencies, failing with the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType

from runstream.errors import MissingExtraError


def require(module: str, *, part: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and module.split(".", maxsplit=1)[0] != exc.name.split(".")[0]:
            raise  # the module exists but one of its own imports failed: show the real cause
        raise MissingExtraError(part, extra, module.split(".", maxsplit=1)[0]) from exc
