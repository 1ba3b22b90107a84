"""Turning what users log into what the schema holds. Runs on the worker thread, not the caller's.

Metric values become floats (Python, numpy and torch scalars alike, without importing either
library); nested dicts become ``a/b`` names. Config values become JSON. Anything that cannot be
represented faithfully is refused with one warning per name, never with an exception.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import numbers
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

logger = logging.getLogger("runstream")

MAX_NAME_LENGTH = 512


class Refusals:
    """Warns once per (reason, name) so a bad key in a loop of a million steps warns once."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self.count = 0

    def refuse(self, name: str, reason: str) -> None:
        self.count += 1
        if (reason, name) not in self._seen:
            self._seen.add((reason, name))
            logger.warning("runstream: not logging %r: %s (warned once)", name, reason)


def to_float(value: Any) -> float | None:
    """The float a metric value stands for, or None when it is not a number."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if kind is bool:
        return None
    item = getattr(value, "item", None)  # numpy scalars, 0-d arrays, one-element tensors
    if callable(item) and (getattr(value, "ndim", 0) == 0 or _is_single_tensor(value)):
        try:
            return to_float(item())
        except (TypeError, ValueError, RuntimeError):
            return None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _is_single_tensor(value: Any) -> bool:
    numel = getattr(value, "numel", None)
    try:
        return numel is not None and numel() == 1
    except Exception:
        return False


def flatten_metrics(
    data: Mapping[Any, Any],
    refusals: Refusals,
    prefix: str = "",
    out: dict[str, float] | None = None,
) -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1.0}``, refusing non-numbers and bad names.

    ``data`` must be the caller's private copy: when it is already flat, named well and all
    floats (the common case) it is returned as it is, without building a new dict.
    """
    if out is None and not prefix:
        for key, value in data.items():
            if (
                type(value) is not float
                or type(key) is not str
                or not 0 < len(key) <= MAX_NAME_LENGTH
            ):
                break
        else:
            return data  # type: ignore[return-value]
    result: dict[str, float] = {} if out is None else out
    for key, value in data.items():
        name = f"{prefix}{key}" if type(key) is str else f"{prefix}{_key_to_str(key)}"
        if isinstance(value, Mapping):
            flatten_metrics(value, refusals, name + "/", result)
            continue
        number = to_float(value)
        if number is None:
            refusals.refuse(name, f"a metric must be a number, not {type(value).__name__}")
        elif not name or len(name) > MAX_NAME_LENGTH:
            refusals.refuse(name[:60], f"a metric name must have 1 to {MAX_NAME_LENGTH} characters")
        else:
            result[name] = number
    return result


def _key_to_str(key: Any) -> str:
    return key.value if isinstance(key, enum.Enum) and isinstance(key.value, str) else str(key)


def to_json(value: Any, refusals: Refusals, name: str = "config") -> Any:
    """A JSON-compatible copy of a config value; paths, dataclasses, enums, numpy and sets too."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {_key_to_str(k): to_json(v, refusals, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, refusals, name) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_json(v, refusals, name) for v in value), key=repr)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return to_json(value.value, refusals, name)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value), refusals, name)
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        try:
            return to_json(tolist(), refusals, name)
        except Exception:
            pass
    number = to_float(value)
    if number is not None:
        return to_json(number, refusals, name)
    refusals.refuse(name, f"{type(value).__name__} is not JSON; stored as its repr()")
    return repr(value)
