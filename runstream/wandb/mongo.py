"""wandb's run ``filters`` and ``order`` (``wandb.Api().runs(path, filters=..., order=...)``) in
runstream's terms.

wandb's public API takes MongoDB query operators over wandb's run fields (wandb 0.31,
``wandb/apis/public/api.py``, ``Api.runs``: ``$and``, ``$or``, ``$nor``, ``$eq``, ``$ne``,
``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``, ``$nin``, ``$exists``, ``$regex``; fields
``createdAt``, ``displayName``, ``group``, ``jobType``, ``name`` (the run id), ``state``,
``tags``, ``config.<key>``, ``summary_metrics.<key>``). :func:`to_where` turns such a filter into
an expression of runstream's ``where`` language (runstream.read.filters, docs/read.md
"Filters"), which ``compile_filter`` turns into SQL in which every value and key is a bound
query parameter: a wandb filter reaches ClickHouse by the same road as a typed ``--where``, and
none of its text is pasted into SQL. Every value goes into the expression as a quoted, escaped
string or a number the language reads back exactly, so the expression means what the filter
says whatever the values hold. :func:`to_order_by` does the same for ``order``.

What each operator means (MongoDB's rules where runstream can keep them; docs/wandb.md "Reading
runs: wandb.Api"):

- ``{"f": v}`` and ``{"f": {"$eq": v}}``: ``f == v``; for ``tags``, the run has tag ``v``;
  ``{"config.x": None}`` holds for a null and for a missing key (MongoDB's rule).
- ``$ne`` and ``$nin`` are the complements of ``$eq`` and ``$in``: they also hold for a run
  without the key, as in MongoDB.
- ``$gt``, ``$gte``, ``$lt``, ``$lte`` compare numbers with numbers and strings with strings
  (bytes); a value of the other type never matches (MongoDB's type bracketing).
- ``$exists: True`` holds for a key with a value other than null (MongoDB counts a null as
  existing); for ``group`` and ``jobType``, for a non-empty one.
- ``$regex`` is RE2 (ClickHouse ``match``, as on wandb's server), unanchored; ``$options``
  ``i``, ``m`` and ``s`` become RE2 flags. On ``tags``: some tag matches.
- ``$not`` (``{"f": {"$not": {"$gt": 1}}}``) and ``$all`` (tags: every one of the tags) are
  MongoDB operators wandb's docs do not list; they are read too. ``$not`` goes on a field only
  (MongoDB refuses a top-level ``$not``; ``$nor`` negates whole filters); ``$and``, ``$or``,
  ``$nor`` go at the top level of a filter only.
- ``filters`` is a dict (wandb's type, ``dict[str, Any] | None``), and so is every filter in the
  lists of ``$and``, ``$or``, ``$nor``.
- ``config.<key>.value`` (how wandb stores config, and what its docs write for ``order``) is
  ``config.<key>``.

Anything else raises :class:`runstream.errors.WandbFilterError` naming the operator or field and
where in the filter it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

from runstream.errors import FilterError, WandbFilterError
from runstream.read.filters import compile_filter

__all__ = ["FIELDS", "OPERATORS", "to_order_by", "to_where"]

# wandb field -> runstream filter name, by kind.
_TEXT = {
    "state": "status",
    "name": "run_id",  # wandb's GraphQL `name` is the run id; the display name is displayName
    "displayName": "name",
    "display_name": "name",
    "group": "group",
    "jobType": "job_type",
    "job_type": "job_type",
}
_TIME = {"createdAt": "created_at", "created_at": "created_at"}
_DOCS = {
    "config": "config",
    "summary_metrics": "summary",
    "summaryMetrics": "summary",
    "summary": "summary",
}
FIELDS: tuple[str, ...] = (*_TEXT, *_TIME, "tags", "config.<key>", "summary_metrics.<key>")
"""The wandb field names a filter may use."""

_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_LOGICAL = ("$and", "$or", "$nor")
OPERATORS: tuple[str, ...] = (
    *_LOGICAL, "$eq", "$ne", *_COMPARE, "$in", "$nin", "$exists", "$regex", "$options", "$not",
    "$all",
)  # fmt: skip
"""The MongoDB operators :func:`to_where` reads."""

# The filter language's key alphabet after a dot (runstream.read.filters._SEGMENT).
_SEGMENT = re.compile(r"[A-Za-z0-9_/\-]+")
# True of every run: run_id is a non-null String. The language has no literal for "true".
_ALWAYS = '(run_id == "" or run_id != "")'
_NEVER = f"(not {_ALWAYS})"
_REGEX_FLAGS = {"i": "i", "m": "m", "s": "s"}


def quote(text: str) -> str:
    """``text`` as a double-quoted string of the filter language, read back exactly: ``\\``
    and ``"`` escaped; every other character (newlines included) is literal there."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Field:
    def __init__(self, wandb_name: str, kind: str, name: str) -> None:
        self.wandb_name = wandb_name
        self.kind = kind  # text | time | tags | doc
        self.name = name  # as the filter language writes it


def _field(key: str, where: str) -> _Field:
    if key in _TEXT:
        return _Field(key, "text", _TEXT[key])
    if key in _TIME:
        return _Field(key, "time", _TIME[key])
    if key == "tags":
        return _Field(key, "tags", "tags")
    head, _, rest = key.partition(".")
    if head in _DOCS and rest:
        return _Field(key, "doc", doc_path(_DOCS[head], rest, where))
    raise WandbFilterError(
        f"runstream cannot filter on {key!r} (at {where}): it filters on " + ", ".join(FIELDS)
    )


def doc_path(doc: str, rest: str, where: str) -> str:
    """The filter language's name of ``<doc>.<rest>`` (``rest`` a wandb dotted key path)."""
    keys = rest.split(".")
    if doc == "config" and len(keys) > 1 and keys[-1] == "value":
        keys.pop()  # wandb stores config as {key: {"value": ...}}: config.lr.value is config.lr
    if not all(keys):
        raise WandbFilterError(f"empty key in {doc}.{rest!r} (at {where})")
    if all(_SEGMENT.fullmatch(k) for k in keys):
        # Dotted: the top-level key "a.b" when there is one, else b inside a.
        return doc + "." + ".".join(keys)
    return doc + "".join(f"[{quote(k)}]" for k in keys)


def _literal(value: Any, where: str) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) > 2**1023:  # not a 64-bit float
            raise WandbFilterError(f"number {value} out of range of a 64-bit float (at {where})")
        return repr(float(value)) if abs(value) > 2**53 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WandbFilterError(
                f"{value!r} is not a number a filter compares with (at {where}); runstream "
                'stores it as the string "NaN", "Infinity" or "-Infinity": compare with that'
            )
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    raise WandbFilterError(
        f"cannot compare with {type(value).__name__} {value!r} (at {where}): use a number, a "
        "string, True, False or None"
    )


def _time(value: Any, where: str) -> str:
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return quote(when.isoformat())
    if isinstance(value, date):
        return quote(value.isoformat())
    if isinstance(value, str):
        return quote(value)
    raise WandbFilterError(
        f"createdAt compares with an ISO 8601 string or a datetime, not {value!r} (at {where})"
    )


def _equal(field: _Field, value: Any, where: str) -> str:
    if field.kind == "tags":
        if not isinstance(value, str):
            raise WandbFilterError(
                f"tags compare with one tag (a string), not {value!r} (at {where}); for several "
                'write {"tags": {"$in": [...]}} or {"$all": [...]}'
            )
        return f"{quote(value)} in tags"
    if field.kind == "time":
        return f"{field.name} == {_time(value, where)}"
    if field.kind == "text":
        if value is None:  # no group, no job type: runstream stores ""
            return f'{field.name} == ""'
        if not isinstance(value, str):
            raise WandbFilterError(
                f"{field.wandb_name} holds text: compare it with a string, not {value!r} "
                f"(at {where})"
            )
        return f"{field.name} == {quote(value)}"
    if isinstance(value, (Mapping, list, tuple)):
        raise WandbFilterError(
            f"runstream compares {field.wandb_name} with single values, not {value!r} (at "
            f"{where}): name a nested key with dots ({field.wandb_name}.key)"
        )
    return f"{field.name} == {_literal(value, where)}"


def _values(argument: Any, op: str, where: str) -> list[Any]:
    if isinstance(argument, (str, bytes, Mapping)) or not isinstance(argument, Sequence):
        what = "filters (dicts)" if op in _LOGICAL else "values"
        raise WandbFilterError(f"{op} takes a list of {what}, not {argument!r} (at {where})")
    return list(argument)


def _any(parts: list[str]) -> str:
    if not parts:
        return _NEVER
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def _all(parts: list[str]) -> str:
    if not parts:
        return _ALWAYS
    return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"


def _regex(field: _Field, pattern: Any, options: Any, where: str) -> str:
    flags = ""
    if isinstance(pattern, re.Pattern):
        flags += "i" if pattern.flags & re.IGNORECASE else ""
        flags += "m" if pattern.flags & re.MULTILINE else ""
        flags += "s" if pattern.flags & re.DOTALL else ""
        pattern = pattern.pattern
    if not isinstance(pattern, str):
        raise WandbFilterError(f"$regex takes a string, not {pattern!r} (at {where})")
    if options is not None:
        if not isinstance(options, str) or any(o not in _REGEX_FLAGS for o in options):
            raise WandbFilterError(
                f"$options {options!r} (at {where}): runstream reads the options i, m and s"
            )
        flags += "".join(_REGEX_FLAGS[o] for o in options)
    if flags:
        pattern = f"(?{''.join(sorted(set(flags)))})" + pattern
    if field.kind == "time":
        raise WandbFilterError(f"$regex does not apply to {field.wandb_name} (at {where})")
    return f"{field.name} =~ {quote(pattern)}"


def _operator(field: _Field, op: str, argument: Any, spec: Mapping[str, Any], where: str) -> str:
    at = f"{where}.{op}"
    if op == "$eq":
        return _equal(field, argument, at)
    if op == "$ne":
        return f"not {_equal(field, argument, at)}"
    if op in ("$in", "$nin"):
        matched = _any([_equal(field, v, at) for v in _values(argument, op, at)])
        return matched if op == "$in" else f"not {matched}"
    if op == "$all":
        if field.kind != "tags":
            raise WandbFilterError(f"runstream reads $all on tags only (at {at})")
        return _all([_equal(field, v, at) for v in _values(argument, op, at)])
    if op in _COMPARE:
        if field.kind == "tags":
            raise WandbFilterError(f"{op} does not apply to tags (at {at}): use $in or $regex")
        if field.kind == "time":
            return f"{field.name} {_COMPARE[op]} {_time(argument, at)}"
        if (
            argument is None
            or isinstance(argument, bool)
            or not isinstance(argument, (int, float, str))
        ):
            raise WandbFilterError(f"{op} compares with a number or a string, not {argument!r} "
                                   f"(at {at})")  # fmt: skip
        if field.kind == "text" and not isinstance(argument, str):
            raise WandbFilterError(
                f"{field.wandb_name} holds text: compare it with a string, not {argument!r} "
                f"(at {at})"
            )
        return f"{field.name} {_COMPARE[op]} {_literal(argument, at)}"
    if op == "$exists":
        if not isinstance(argument, (bool, int)):
            raise WandbFilterError(f"$exists takes True or False, not {argument!r} (at {at})")
        if field.kind == "doc":
            return f"{field.name} {'!=' if argument else '=='} null"
        if field.kind == "text":
            return f'{field.name} {"!=" if argument else "=="} ""'
        raise WandbFilterError(f"$exists does not apply to {field.wandb_name} (at {at})")
    if op == "$regex":
        return _regex(field, argument, spec.get("$options"), at)
    if op == "$options":
        if "$regex" not in spec:
            raise WandbFilterError(f"$options without $regex (at {at})")
        return ""  # read with $regex
    if op == "$not":
        if isinstance(argument, (str, re.Pattern)):
            return f"not {_regex(field, argument, None, at)}"
        if not isinstance(argument, Mapping) or not argument:
            raise WandbFilterError(
                f"$not takes operators ({{'$gt': 1}}) or a regular expression, not {argument!r} "
                f"(at {at})"
            )
        return f"not {_condition(field, argument, at)}"
    if op in _LOGICAL:
        raise WandbFilterError(
            f"{op} goes at the top level of a filter (or of a filter inside $and, $or, $nor), "
            f"not on a field (at {at}): write {{{op!r}: [{{{field.wandb_name!r}: ...}}, ...]}}"
        )
    raise _unsupported(op, at)


_FIELD_OPERATORS = tuple(o for o in OPERATORS if o not in (*_LOGICAL, "$options"))


def _unsupported(op: str, where: str) -> WandbFilterError:
    return WandbFilterError(
        f"runstream does not support the operator {op!r} (at {where}); on a field it reads "
        + ", ".join(_FIELD_OPERATORS)
        + "; at the top level of a filter "
        + ", ".join(_LOGICAL)
    )


def _top_level(op: str, where: str) -> WandbFilterError:
    """The error for an operator other than $and, $or, $nor at the top level of a filter."""
    if op == "$not":  # MongoDB refuses it there too ("unknown top level operator: $not")
        return WandbFilterError(
            f"$not is not a top-level operator (at {where}): it goes on a field, as "
            "{'state': {'$not': {'$eq': 'finished'}}}; to negate whole filters write "
            "{'$nor': [{...}, ...]}"
        )
    if op in _FIELD_OPERATORS:
        return WandbFilterError(
            f"{op} goes on a field, not at the top level of a filter (at {where}): write "
            f"{{'config.lr': {{{op!r}: ...}}}}; at the top level runstream reads "
            + ", ".join(_LOGICAL)
        )
    return _unsupported(op, where)


def _condition(field: _Field, value: Any, where: str) -> str:
    if isinstance(value, Mapping) and any(str(k).startswith("$") for k in value):
        if not all(isinstance(k, str) and k.startswith("$") for k in value):
            raise WandbFilterError(
                f"mixed operators and keys in {dict(value)!r} (at {where}): write only operators"
            )
        parts = [_operator(field, op, arg, value, where) for op, arg in value.items()]
        return _all([p for p in parts if p])
    return _equal(field, value, where)


def _document(doc: Any, where: str) -> str:
    if not isinstance(doc, Mapping):
        raise WandbFilterError(
            f"a filter is a dict of fields and operators, not {type(doc).__name__} {doc!r} "
            f"(at {where}): write {{'state': 'finished'}} or {{'config.lr': {{'$gt': 0.001}}}}"
        )
    parts: list[str] = []
    for key, value in doc.items():
        if not isinstance(key, str):
            raise WandbFilterError(f"a filter key is a string, not {key!r} (at {where})")
        at = f"{where}[{key!r}]"
        if key in _LOGICAL:
            items = _values(value, key, at)
            if not items:
                raise WandbFilterError(f"{key} takes a non-empty list of filters (at {at})")
            subs = [_document(item, f"{at}[{i}]") for i, item in enumerate(items)]
            if key == "$and":
                parts.append(_all(subs))
            elif key == "$or":
                parts.append(_any(subs))
            else:
                parts.append(f"not {_any(subs)}")
        elif key.startswith("$"):
            raise _top_level(key, at)
        else:
            parts.append(_condition(_field(key, at), value, at))
    return _all(parts)


def to_where(filters: Mapping[str, Any] | None) -> str | None:
    """The ``where`` expression (docs/read.md "Filters") that selects what the wandb ``filters``
    select; ``None`` for no filter (``None`` or ``{}``).

    Raises :class:`WandbFilterError` for an operator, a field or a value runstream does not
    read (the message names it and where it is, as ``filters['$or'][1]['state']``), and for
    ``filters`` that are not a dict (wandb's type: ``dict[str, Any] | None``)."""
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        also = (
            " (runstream's own filter language, a string, is runstream.Api().runs(where=...))"
            if isinstance(filters, str)
            else ""
        )
        raise WandbFilterError(
            f"filters must be a dict (wandb's type: dict[str, Any] | None), not "
            f"{type(filters).__name__} {filters!r}: write {{'state': 'finished'}} or "
            f"{{'config.lr': {{'$gt': 0.001}}}}{also}"
        )
    if not filters:
        return None
    expression = _document(filters, "filters")
    try:
        compile_filter(expression)
    except FilterError as error:  # deeper than the language's nesting bound, a bad regex
        raise WandbFilterError(f"runstream cannot read this filter: {error.reason}") from None
    return expression


# order: wandb field -> runstream order_by name (runstream.Api().runs(order_by=...)).
_ORDER = {
    "created_at": "started_at",
    "createdAt": "started_at",
    "display_name": "name",
    "displayName": "name",
    "name": "run_id",
    "state": "status",
}


def to_order_by(order: str | None) -> str:
    """runstream's ``order_by`` for wandb's ``order``: ``"+created_at"`` (the default, oldest
    first), ``"-summary_metrics.val_loss"``, ``"config.lr.value"``, ``"config.lr"``,
    ``"display_name"``, ``"state"``: a ``+`` or no sign ascending, ``-`` descending. Not
    ``heartbeat_at`` (runstream orders runs by the fields of its filter language).

    Raises :class:`WandbFilterError` for a field it cannot order by, or an ``order`` that is
    not a string."""
    if order is not None and not isinstance(order, str):
        raise WandbFilterError(
            f"order is a string (wandb's type), not {type(order).__name__} {order!r}: write "
            "'-created_at' or '+summary_metrics.val_loss'"
        )
    order = (order or "+created_at").strip()
    descending = order.startswith("-")
    name = order[1:] if order[:1] in "+-" and order else order
    sign = "-" if descending else ""
    if name in _ORDER:
        return sign + _ORDER[name]
    head, _, rest = name.partition(".")
    if head in _DOCS and rest:
        keys = rest.split(".")
        if head == "config" and len(keys) > 1 and keys[-1] == "value":
            keys.pop()
        if all(keys):
            return f"{sign}{_DOCS[head]}.{'.'.join(keys)}"
    raise WandbFilterError(
        f"runstream cannot order runs by {order!r}: it orders by created_at, "
        "display_name, name, state, config.<key> and summary_metrics.<key> (+ ascending, "
        "- descending)"
    )
