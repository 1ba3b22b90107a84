"""Optional dependencies: fail with the name of the extra that provides them."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from runstream.errors import MissingExtraError


def require(module: str, *, part: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``."""
    top = module.split(".", maxsplit=1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and top != exc.name.split(".")[0]:
            raise  # the module exists but one of its own imports failed: show the real cause
        raise MissingExtraError(part, extra, top) from exc


def require_installed(module: str, *, part: str, extra: str) -> None:
    """Like :func:`require`, without paying for the import now (a cheap presence check)."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(part, extra, module)
