"""Turning what users log into what the schema holds. Runs on the worker thread, not the caller's,
except :func:`snapshot_metrics` (log() takes values that could change later as they are at the
call) and config and summary values (converted in the caller's thread: not on a hot path).

Metric values become floats (Python, numpy and torch scalars alike, without importing either
library); nested dicts become ``a/b`` names. Config and summary values become JSON. Anything that
cannot be represented faithfully is stored in a stated other form or refused, each with one
warning per name and a count in :class:`Refusals`, never with an exception.

Where the limits come from: orjson writes integers of 64 bits only (signed or unsigned), refuses
strings that are not valid UTF-8 (lone surrogates) and nests at most 254 levels; the schema's
names (metric names, summary keys, tags) have 1 to 512 characters; ClickHouse stores metric
values as Float64 and steps as Int64.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import numbers
import sys
import threading
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

from runstream.schemas.events import dump_metric_value

logger = logging.getLogger("runstream")

MAX_NAME_LENGTH = 512
"""Characters in a metric name, summary key or tag (the schema's ``Name``)."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
MAX_DEPTH = 100
"""Nesting levels kept in a config or summary value (orjson stops at 254 for the whole event)."""

CYCLE_MARKER = "<cycle: refers to a container it is inside of>"
DEEP_MARKER = f"<nested deeper than {MAX_DEPTH} levels: left out>"
UNREPRESENTABLE = "<unrepresentable {} object: its repr() raised>"


class Refusals:
    """Counts every value refused or changed, and warns once per (reason, name), so a bad key
    in a loop of a million steps warns once but counts a million times.

    Thread-safe: the caller's thread and the worker both report here.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.count = 0
        self.by_kind: dict[str, int] = {}

    def refuse(
        self, name: str, reason: str, kind: str = "value", *, key: str | None = None
    ) -> None:
        """A value that is not stored: ``runstream: not logging 'name': reason``. Warned once
        per (``key`` or ``reason``, name)."""
        self.note(name, f"not logging {_short(name)}: {reason}", kind, key=key or reason)

    def tally(self, kind: str) -> None:
        """Count one refusal the caller warns about itself."""
        with self._lock:
            self.count += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    def note(self, name: str, message: str, kind: str, *, key: str | None = None) -> None:
        """A value refused, changed or left out; ``message`` says which and what was done."""
        with self._lock:
            self.count += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            seen = (key or message, name)
            if seen in self._seen:
                return
            self._seen.add(seen)
        logger.warning("runstream: %s (warned once)", message)


def _short(name: str, limit: int = 80) -> str:
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_text(value: str) -> bool:
    """True when ``value`` is valid Unicode text (no lone surrogates), what UTF-8 can hold."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def repair_text(value: str) -> str:
    """``value`` with each lone surrogate written as the six characters ``\\udXXX``."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


# --- metric values ---------------------------------------------------------------------------
def to_float(value: Any) -> float | None:
    """The float a metric value stands for, or None when it is not a number (or a number no
    float can hold, such as ``10**400``). Never raises.

    Taken: Python ints and floats, ``numbers.Real`` (``Fraction``), ``Decimal``, numpy scalars,
    and any array or tensor of exactly one element (0-d, shape ``(1,)``, ``(1, 1)``...: numpy's
    ``size``, torch's ``numel()``) through its ``.item()``.
    """
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return None
    if kind is bool:
        return None
    try:
        item = getattr(value, "item", None)  # numpy scalars and arrays, torch tensors
        if callable(item) and _one_element(value):
            inner = item()
            # numpy's longdouble.item() returns a longdouble: do not go round in circles.
            if type(inner) is not kind:
                return to_float(inner)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if kind is _decimal_type():
            number = float(value)
            # Decimal("1e400") is inf as a float: a number no float holds, like 10**400.
            return number if math.isfinite(number) or not value.is_finite() else None
    except Exception:  # whatever a foreign object's item(), ndim or __float__ raise
        return None
    return None


def _one_element(value: Any) -> bool:
    """True for a 0-d or one-element array or tensor (and for numpy scalars)."""
    if getattr(value, "ndim", 0) == 0:
        return True
    size = getattr(value, "size", None)  # numpy: an int; torch: a method (the shape)
    if type(size) is int:
        return size == 1
    numel = getattr(value, "numel", None)
    try:
        return callable(numel) and numel() == 1
    except Exception:
        return False


def _decimal_type() -> type | None:
    # Without importing decimal: a Decimal can only exist once the module is loaded.
    module = sys.modules.get("decimal")
    return getattr(module, "Decimal", None) if module is not None else None


def _shape(value: Any) -> tuple[int, ...] | None:
    """An array's or tensor's shape as a tuple, or None (not an array, or unreadable)."""
    try:
        shape = getattr(value, "shape", None)
        if shape is None or isinstance(shape, (str, bytes)):
            return None
        return tuple(int(n) for n in shape)
    except Exception:
        return None


class Loggable:
    """Base of the objects log() takes besides numbers (``runstream.Histogram``, the wandb
    shim's media types): :func:`snapshot_metrics` hands them to the run instead of the worker's
    number check (``producers/histograms.py``). Defines no arithmetic, so log()'s one-sum test
    for plain numbers fails on them."""

    __slots__ = ()


class _ContainsItself:
    """What :func:`snapshot_metrics` puts where a mapping contains itself (a cycle)."""

    def __repr__(self) -> str:
        return "<a mapping that contains itself>"


CONTAINS_ITSELF = _ContainsItself()


def _not_a_metric(value: Any) -> str:
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        return "the integer is too large for a 64-bit float (metrics are Float64)"
    if value is CONTAINS_ITSELF:
        return "the dict contains itself (a cycle); the inner reference is left out"
    if type(value) is _decimal_type():
        return "the Decimal is too large for a 64-bit float (metrics are Float64)"
    shape = _shape(value)
    if shape is not None and callable(getattr(value, "item", None)):
        count = math.prod(shape)
        if count != 1:
            return (
                f"a metric must be one number, not a {type(value).__name__} of shape "
                f"{shape} ({count} elements); log one element, or a reduction such as .mean()"
            )
    return f"a metric must be a number, not {type(value).__name__}"


_PLAIN = {float, int, str, bool, type(None)}
"""Values that cannot change after log() returns (immutable), kept as they are."""


def snapshot_metrics(
    data: dict[Any, Any],
    _depth: int = 0,
    _path: set[int] | None = None,
    media: list[Any] | None = None,
) -> dict[Any, Any]:
    """``data`` (the caller's private copy) with every value as it is NOW, in the caller's
    thread: nested mappings copied, numpy scalars, arrays and tensors of one element converted
    to floats through ``.item()`` (as wandb does). The worker reads the values later, when a
    training loop may have changed them (``acc[...] = s``, ``d["m"]["v"] = x``).

    What cannot be converted stays as it is, for the worker to refuse with its warning; a
    mapping that contains itself becomes :data:`CONTAINS_ITSELF` (refused there). A
    :class:`Loggable` (checked only where a value is not a number) is appended to ``media``.
    Never raises.
    """
    path = {id(data)} if _path is None else _path
    for key, value in list(data.items()):
        if type(value) in _PLAIN:
            continue
        if isinstance(value, Mapping):
            if id(value) in path:
                data[key] = CONTAINS_ITSELF
            elif _depth < MAX_DEPTH:  # deeper ones the worker refuses without reading them
                try:
                    inner = dict(value)
                except Exception:  # a foreign Mapping that cannot be read: the worker says so
                    continue
                path.add(id(value))
                data[key] = snapshot_metrics(inner, _depth + 1, path, media)
                path.discard(id(value))
            continue
        number = to_float(value)
        if number is not None:
            data[key] = number
        elif media is not None and (isinstance(value, Loggable) or media_list(value)):
            media.append(value)
    return data


def media_list(value: Any) -> bool:
    """True for a list or tuple holding a :class:`Loggable` (``[wandb.Image(...), ...]``, as
    wandb logs a gallery): refused as media, not as a metric that is "not list"."""
    return isinstance(value, (list, tuple)) and any(isinstance(v, Loggable) for v in value)


def flatten_metrics(
    data: Mapping[Any, Any],
    refusals: Refusals,
    prefix: str = "",
    out: dict[str, float] | None = None,
    _depth: int = 0,
) -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1.0}``, refusing non-numbers and bad names.

    ``data`` must be the caller's private copy: when it is already flat, named well and all
    floats (the common case) it is returned as it is, without building a new dict. Two values
    that end up under the same name (``{"a": {"b": 1}, "a/b": 2}``) keep the later one, with a
    warning. Never raises.
    """
    if out is None and not prefix:
        for key, value in data.items():
            if (
                type(value) is not float
                or type(key) is not str
                or not 0 < len(key) <= MAX_NAME_LENGTH
                or not (key.isascii() or is_text(key))
            ):
                break
        else:
            return data  # type: ignore[return-value]
    result: dict[str, float] = {} if out is None else out
    try:
        items = list(data.items())
    except Exception as exc:  # a foreign Mapping whose items() raise
        refusals.refuse(prefix or "data", f"its items cannot be read ({exc!r})", "metric")
        return result
    for key, value in items:
        key_text = key if type(key) is str else _key_to_str(key)
        if key_text is None:
            refusals.refuse(f"{prefix}<key>", "the key's str() raised", "metric")
            continue
        name = f"{prefix}{key_text}"
        if isinstance(value, Mapping):
            if _depth >= MAX_DEPTH:
                refusals.refuse(name[:60], f"nested deeper than {MAX_DEPTH} levels", "metric")
                continue
            flatten_metrics(value, refusals, name + "/", result, _depth + 1)
            continue
        number = to_float(value)
        if number is None:
            reason = _not_a_metric(value)
            # One warning per name for arrays of any shape (a shape that changes each step).
            once = "shape" if reason.startswith("a metric must be one number") else reason
            refusals.refuse(name[:200], reason, "metric", key=once)
        elif not name or len(name) > MAX_NAME_LENGTH:
            refusals.refuse(
                name[:60], f"a metric name must have 1 to {MAX_NAME_LENGTH} characters", "metric"
            )
        elif not is_text(name):
            refusals.refuse(
                repair_text(name)[:200],
                "the name is not valid Unicode text (it holds a lone surrogate)",
                "metric",
            )
        else:
            if name in result:
                refusals.note(
                    name,
                    f"metric {_short(name)} is given twice in one log() call (nested and "
                    "flat spellings of one name); the later value is kept",
                    "duplicate",
                )
            result[name] = number
    return result


def _key_to_str(key: Any) -> str | None:
    """The text of a key, or None when its ``str()`` raises."""
    if isinstance(key, enum.Enum) and isinstance(key.value, str):
        return key.value
    try:
        text = str(key)
    except Exception:
        return None
    return text if type(text) is str else None


# --- config and summary values -------------------------------------------------------------------
def to_json(value: Any, refusals: Refusals, name: str = "config") -> Any:
    """A JSON value orjson can write, standing for ``value``: never raises.

    Paths, dates, enums, dataclasses, sets, numpy and torch values are converted. What JSON
    cannot hold is stored in another stated form, with one warning naming the key: integers
    beyond 64 bits as their decimal string; NaN and +-inf as "NaN", "Infinity", "-Infinity"
    (as metrics spell them, no warning); strings that are not valid Unicode with lone
    surrogates escaped; a container inside itself as :data:`CYCLE_MARKER`; other objects as
    their ``repr()`` (or a fixed placeholder when ``repr()`` raises). Keys become strings; two
    keys that become the same string keep the later value, with a warning.
    """
    return _to_json(value, refusals, name, 0, set())


def _to_json(value: Any, refusals: Refusals, name: str, depth: int, path: set[int]) -> Any:
    kind = type(value)
    if kind is str:
        return value if is_text(value) else _repaired(value, refusals, name)
    if value is None or kind is bool:
        return value
    if kind is int:
        return value if INT64_MIN <= value <= UINT64_MAX else _big_int(value, refusals, name)
    if kind is float:
        return value if math.isfinite(value) else dump_metric_value(value)
    try:
        return _convert(value, refusals, name, depth, path)
    except Exception as exc:  # a foreign object whose methods raise: keep the event going
        refusals.note(
            name,
            f"{name}: a {kind.__name__} could not be read ({type(exc).__name__}); "
            "stored as a placeholder",
            "config",
        )
        return UNREPRESENTABLE.format(kind.__name__)


def _convert(value: Any, refusals: Refusals, name: str, depth: int, path: set[int]) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, enum.Enum):
        return _to_json(value.value, refusals, name, depth, path)
    if isinstance(value, str):
        return _to_json(str.__str__(value), refusals, name, depth, path)
    if isinstance(value, int):
        return _to_json(int.__index__(value), refusals, name, depth, path)
    if isinstance(value, float):
        return _to_json(float(value), refusals, name, depth, path)
    if isinstance(value, PurePath):
        return _to_json(str(value), refusals, name, depth, path)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if (isinstance(value, numbers.Rational) and not isinstance(value, numbers.Integral)) or (
        type(value) is _decimal_type()
    ):
        return _exact_or_text(value, refusals, name)
    container = isinstance(value, (Mapping, list, tuple, set, frozenset)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )
    if container:
        if id(value) in path:
            refusals.note(
                name,
                f"{name} contains itself; the inner reference is stored as {CYCLE_MARKER!r}",
                "config",
            )
            return CYCLE_MARKER
        if depth >= MAX_DEPTH:
            refusals.note(name, f"{name} is nested deeper than {MAX_DEPTH} levels; the "
                          f"deeper part is stored as {DEEP_MARKER!r}", "config")  # fmt: skip
            return DEEP_MARKER
        path.add(id(value))
        try:
            return _container(value, refusals, name, depth + 1, path)
        finally:
            path.discard(id(value))
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        try:
            converted = tolist()
        except Exception:
            converted = value
        if converted is not value and type(converted) is not type(value):
            return _to_json(converted, refusals, name, depth, path)
    number = to_float(value)
    if number is not None:
        return _to_json(number, refusals, name, depth, path)
    text = _safe_repr(value)
    if text is None:
        placeholder = UNREPRESENTABLE.format(type(value).__name__)
        refusals.note(name, f"{name}: a {type(value).__name__} is not JSON and its repr() "
                      f"raised; stored as {placeholder!r}", "config")  # fmt: skip
        return placeholder
    refusals.note(
        name,
        f"{name}: a {type(value).__name__} is not JSON; stored as its repr()",
        "config",
        key="repr",
    )
    return text if is_text(text) else repair_text(text)


def _container(value: Any, refusals: Refusals, name: str, depth: int, path: set[int]) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in list(value.items()):
            text = key if type(key) is str else _key_to_str(key)
            if text is None:
                refusals.note(name, f"{name}: a key whose str() raised is left out", "config")
                continue
            if not is_text(text):
                repaired = repair_text(text)
                refusals.note(f"{name}.{repaired}", f"key {name}.{repaired} is not valid "
                              "Unicode text; stored with its lone surrogates escaped",
                              "config")  # fmt: skip
                text = repaired
            if text in out:
                refusals.note(f"{name}.{text}", f"key {name}.{text} is given twice (keys of "
                              "different types with the same text); the later value is kept",
                              "duplicate")  # fmt: skip
            out[text] = _to_json(item, refusals, f"{name}.{text}", depth, path)
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json(v, refusals, name, depth, path) for v in list(value)]
    if isinstance(value, (set, frozenset)):
        items = [_to_json(v, refusals, name, depth, path) for v in list(value)]
        return sorted(items, key=repr)
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return _container(fields, refusals, name, depth, path)


def _exact_or_text(value: Any, refusals: Refusals, name: str) -> Any:
    """A ``Fraction`` or ``Decimal``: the float when it is exactly that float (``Fraction(1, 2)``,
    ``Decimal("0.5")``), without a word; otherwise its text (``"1/3"``, ``"0.1"``), warned."""
    try:
        number = float(value)
    except (OverflowError, ValueError):  # Fraction(10**400), Decimal("sNaN")
        number = math.nan
    if math.isfinite(number) and number == value:  # exact comparisons, both types
        return number
    text = repair_text(str(value))
    refusals.note(name, f"{name}: the {type(value).__name__} {text[:40]} is not exactly any "
                  f"64-bit float; stored as its text {text[:40]!r}", "config")  # fmt: skip
    return text


def _repaired(value: str, refusals: Refusals, name: str) -> str:
    refusals.note(
        name,
        f"{name}: a string that is not valid Unicode text (a lone surrogate); stored with "
        "its lone surrogates escaped as \\udXXX",
        "config",
    )
    return repair_text(value)


def _big_int(value: int, refusals: Refusals, name: str) -> str:
    refusals.note(
        name,
        f"{name}: the integer {_digits(value)} is outside the 64-bit range JSON numbers are "
        "written in; stored as its decimal string",
        "config",
    )
    return _int_text(value)


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # over sys.get_int_max_str_digits() digits
        return hex(value)


def _digits(value: int) -> str:
    text = _int_text(value)
    return text if len(text) <= 30 else f"{text[:12]}...({len(text)} digits)"


def _safe_repr(value: Any) -> str | None:
    try:
        text = repr(value)
    except Exception:
        return None
    return text if type(text) is str else None
