"""Alert rules: what to watch, for which runs, and how loud to be.

A rule is a small pydantic model; ``kind`` selects its type (a discriminated union). Rules come
from a TOML file of ``[[rule]]`` tables (:func:`load_rules`) or from dicts sent to the API
(:func:`parse_rule`); :func:`dump_rules` writes them back as TOML. The evaluator that applies them
to events is :mod:`runstream.processors.alerting`.

Example file::

    [[rule]]
    name = "loss-high"
    kind = "threshold"
    project = "vision"          # exact project name, or "*" (the default) for every project
    tags = ["baseline"]         # the run must carry every one of these tags
    metric = "loss"             # exact name or a glob: "val/*"
    above = 10.0
    for_steps = 3
    level = "error"

    [[rule]]
    name = "nan"
    kind = "nan"                # metric defaults to "*": any metric turning NaN or +-inf

Common fields: ``name`` (unique, ``[A-Za-z0-9._-]+``), ``kind``, ``project`` (default ``"*"``),
``tags`` (default none), ``group`` (default any), ``level`` (``info``/``warn``/``error``, default
``warn``), ``enabled`` (default true). The fields of each kind are on its model below.
"""

from __future__ import annotations

import fnmatch
import importlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from runstream.errors import RunstreamError
from runstream.processors.alert import AlertLevel
from runstream.schemas.events import RunStatus

RULE_NAME_PATTERN = r"^[A-Za-z0-9._-]+$"
USER_RULE = "user"
"""The ``rule`` of every alert raised by ``run.alert()`` (as the sink's ``alerts_mv`` writes it)."""


class RuleError(RunstreamError, ValueError):
    """A rule or a rule file is invalid, or a rule set operation is not possible.

    ``index`` (1-based position in the file or list), ``rule`` (its name) and ``field`` say where,
    when known, so an API can point at the offending input.
    """

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        rule: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.index = index
        self.rule = rule
        self.field = field


# --- the models -------------------------------------------------------------------------------
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _RuleBase(BaseModel):
    # Unknown keys are refused (unlike events): in a hand-written file a typo such as "abvoe"
    # must not silently produce a rule that never fires.
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=RULE_NAME_PATTERN)
    project: str = Field("*", min_length=1, max_length=512)
    tags: tuple[str, ...] = ()
    group: str | None = None
    level: AlertLevel = "warn"
    enabled: bool = True

    def applies_to(self, project: str, tags: frozenset[str], group: str | None) -> bool:
        """Whether the rule watches a run of ``project`` with these tags and group."""
        if self.project not in ("*", project):
            return False
        if self.group is not None and self.group != group:
            return False
        return all(tag in tags for tag in self.tags)

    @model_validator(mode="after")
    def _reserved_name(self) -> _RuleBase:
        # Alerts of run.alert() carry rule = "user" (that is what the sink's view writes); a
        # threshold rule of that name would be indistinguishable from them in the alerts table.
        if self.name == USER_RULE and getattr(self, "kind", None) != "user":
            raise ValueError(f"the name {USER_RULE!r} is reserved for rules of kind 'user'")
        return self


class ThresholdRule(_RuleBase):
    """A metric above ``above`` or below ``below`` for ``for_steps`` consecutive steps.

    Resolves when the condition is false at one step. With both bounds it fires outside the band
    ``[below, above]``. NaN values are skipped (the ``nan`` kind is for those); infinities compare
    as numbers.
    """

    kind: Literal["threshold"] = "threshold"
    metric: str = Field(min_length=1, max_length=512)
    above: FiniteFloat | None = None
    below: FiniteFloat | None = None
    for_steps: int = Field(1, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdRule:
        if self.above is None and self.below is None:
            raise ValueError("a threshold rule needs 'above', 'below' or both")
        if self.above is not None and self.below is not None and self.below > self.above:
            raise ValueError(
                f"'below' ({self.below}) is greater than 'above' ({self.above}): the rule fires "
                "outside [below, above], so every value would match"
            )
        return self


class NanRule(_RuleBase):
    """A metric value is NaN, +inf or -inf. Resolves on the metric's next finite value."""

    kind: Literal["nan"] = "nan"
    metric: str = Field("*", min_length=1, max_length=512)


class PlateauRule(_RuleBase):
    """No improvement by more than ``min_delta`` for ``patience`` steps of the metric.

    Steps are the steps at which the metric was logged (like Keras' ``EarlyStopping`` counts
    epochs), not step numbers. Resolves on an improvement. Non-finite values are skipped.
    """

    kind: Literal["plateau"] = "plateau"
    metric: str = Field(min_length=1, max_length=512)
    mode: Literal["min", "max"] = "min"
    patience: int = Field(ge=1, le=1_000_000)
    min_delta: FiniteFloat = Field(0.0, ge=0)


class DivergenceRule(_RuleBase):
    """The metric rose by more than ``rise_pct`` % over its minimum of the previous ``window``
    steps (a loss going up). Resolves when a value is back within that margin.

    The margin is ``abs(min) * rise_pct / 100``, so a minimum of 0 makes any positive value a
    divergence. Non-finite values are skipped.
    """

    kind: Literal["divergence"] = "divergence"
    metric: str = Field(min_length=1, max_length=512)
    rise_pct: FiniteFloat = Field(gt=0)
    window: int = Field(ge=1, le=100_000)


class RunFailedRule(_RuleBase):
    """The run finished with one of ``statuses``, or stopped sending heartbeats (``crashed``).

    Resolves when the run resumes (or turns out to be alive after all).
    """

    kind: Literal["run_failed"] = "run_failed"
    statuses: tuple[RunStatus, ...] = Field(("failed", "crashed", "killed"), min_length=1)


class StalledRule(_RuleBase):
    """The run is alive (it sends events) but logged no new step for ``after_seconds``.

    Resolves on a new step, or when the run ends or stops sending heartbeats.
    """

    kind: Literal["stalled"] = "stalled"
    after_seconds: FiniteFloat = Field(gt=0)


class UserRule(_RuleBase):
    """Deliver the alerts of ``run.alert()`` (``alert_raised`` events) of the matching runs.

    One alert per event, never resolved. The alert keeps the event's level and uses the event id
    as its ``alert_id`` and ``"user"`` as its rule, exactly like the row the sink's ``alerts_mv``
    writes for the same event, so ClickHouse holds one alert per ``run.alert()`` call, not two.
    """

    kind: Literal["user"] = "user"


Rule: TypeAlias = Annotated[
    ThresholdRule | NanRule | PlateauRule | DivergenceRule | RunFailedRule | StalledRule | UserRule,
    Field(discriminator="kind"),
]
"""Any rule; ``kind`` selects the model."""

MetricRule: TypeAlias = ThresholdRule | NanRule | PlateauRule | DivergenceRule
"""The kinds that watch metric values (and have a ``metric`` glob)."""

RULE_KINDS: tuple[str, ...] = (
    "threshold",
    "nan",
    "plateau",
    "divergence",
    "run_failed",
    "stalled",
    "user",
)

_RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)
_GLOB_CHARS = frozenset("*?[")


def metric_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate for metric names: equality, or fnmatch-style globbing (case-sensitive).

    ``*`` also matches ``/`` (``val/*`` matches ``val/a/b``). A name equal to the pattern always
    matches, so a metric literally called ``acc[0]`` can be watched by its own name.
    """
    if not _GLOB_CHARS.intersection(pattern):
        return pattern.__eq__
    # Compiled once per rule; the evaluator calls this only on the first sight of a metric name.
    match = re.compile(fnmatch.translate(pattern)).match
    return lambda name: name == pattern or match(name) is not None


# --- parsing ----------------------------------------------------------------------------------
def parse_rule(data: Mapping[str, Any], *, index: int | None = None, source: str = "") -> Rule:
    """Validate one rule given as a dict (a ``[[rule]]`` table or an API request body).

    Raises :class:`RuleError` naming the rule (by ``index``, 1-based, and name) and the fields.
    """
    if not isinstance(data, Mapping):
        where = _where(source, index, None)
        raise RuleError(
            f"{where}expected a table of rule fields, not {type(data).__name__}", index=index
        )
    name = data.get("name")
    name = name if isinstance(name, str) else None
    try:
        return _RULE_ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise _rule_error(exc, data, index=index, name=name, source=source) from None


def parse_rules(items: Iterable[Mapping[str, Any]], *, source: str = "") -> list[Rule]:
    """Validate a list of rules; names must be unique."""
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items, start=1):
        rule = parse_rule(item, index=index, source=source)
        first = seen.get(rule.name)
        if first is not None:
            raise RuleError(
                f"{_where(source, index, rule.name)}duplicate name: rule #{first} is already "
                f"called {rule.name!r}; rule names must be unique",
                index=index,
                rule=rule.name,
                field="name",
            )
        seen[rule.name] = index
        rules.append(rule)
    return rules


def loads_rules(text: str, *, source: str = "<string>") -> list[Rule]:
    """Parse the TOML text of a rule file (``[[rule]]`` tables)."""
    toml = toml_module()
    try:
        document: dict[str, Any] = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise RuleError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(key for key in document if key != "rule")
    if unknown:
        raise RuleError(
            f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            "a rule file holds only [[rule]] tables"
        )
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError(f"{source}: 'rule' must be an array of tables: write [[rule]], not [rule]")
    return parse_rules(tables, source=source)


def load_rules(path: str | Path) -> list[Rule]:
    """Read a TOML rule file. Raises :class:`RuleError` on any problem, naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"{path}: cannot read the rule file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RuleError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return loads_rules(text, source=str(path))


def toml_module() -> ModuleType:
    # tomllib is in the standard library from 3.11; on 3.10 its original, tomli, reads the same.
    for name in ("tomllib", "tomli"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise RuleError(
        "reading rule files on Python 3.10 needs the 'tomli' package: pip install tomli"
    )


def _where(source: str, index: int | None, name: str | None) -> str:
    parts = []
    if source:
        parts.append(source)
    if index is not None:
        parts.append(f"rule #{index}" + (f" ({name!r})" if name else ""))
    elif name:
        parts.append(f"rule {name!r}")
    return ": ".join(parts) + ": " if parts else ""


def _rule_error(
    exc: ValidationError,
    data: Mapping[str, Any],
    *,
    index: int | None,
    name: str | None,
    source: str,
) -> RuleError:
    where = _where(source, index, name)
    problems: list[str] = []
    fields: list[str] = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        loc = [str(part) for part in err["loc"]]
        if kind == "union_tag_not_found":
            fields.append("kind")
            problems.append(f"'kind' is missing; one of {', '.join(RULE_KINDS)}")
            continue
        if kind == "union_tag_invalid":
            fields.append("kind")
            problems.append(
                f"'kind' {data.get('kind')!r} is unknown; one of {', '.join(RULE_KINDS)}"
            )
            continue
        if loc and loc[0] in RULE_KINDS:
            loc = loc[1:]  # pydantic puts the union member's tag first; the file has no such level
        field = ".".join(loc)
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            problems.append(f"unknown field {field!r}")
        elif kind == "missing":
            problems.append(f"{field!r} is required")
        elif field:
            problems.append(f"{field!r}: {msg} (got {_short(err.get('input'))})")
        else:
            problems.append(msg)
        fields.append(field)
    return RuleError(
        where + "; ".join(problems), index=index, rule=name, field=fields[0] if fields else None
    )


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- writing ----------------------------------------------------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in value:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04X}")  # TOML refuses raw control characters
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-tripping form; '1e-05' is valid TOML
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML rule value")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def _dump_rank(key: str) -> int:
    if key in ("project", "tags", "group"):
        return 0
    return 2 if key in ("level", "enabled") else 1


def dump_rule(rule: Rule) -> str:
    """One ``[[rule]]`` table: name and kind first, then the fields that differ from defaults."""
    fields = rule.model_dump(exclude_defaults=True, exclude={"name", "kind"})
    lines = ["[[rule]]", f"name = {toml_string(rule.name)}", f"kind = {toml_string(rule.kind)}"]
    # Which runs, then what to watch, then how loud: the order a reader asks the questions in.
    # (sorted() is stable: within each group the fields keep the model's order.)
    for key, value in sorted(fields.items(), key=lambda item: _dump_rank(item[0])):
        if value is None:  # TOML has no null; None is every optional field's default anyway
            continue
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def dump_rules(rules: Iterable[Rule]) -> str:
    """The TOML text of a rule file; :func:`loads_rules` reads it back to equal rules."""
    return "\n".join(dump_rule(rule) for rule in rules)


# --- a named collection -----------------------------------------------------------------------
class RuleSet:
    """Rules by name, in insertion order; refuses two rules of the same name."""

    def __init__(self, rules: Iterable[Rule | Mapping[str, Any]] = ()) -> None:
        self._rules: dict[str, Rule] = {}
        for rule in rules:
            self.add(rule)

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        return cls(load_rules(path))

    def add(self, rule: Rule | Mapping[str, Any]) -> Rule:
        """Add a rule (a model or a dict, as the API receives it). Names must be unique."""
        rule = _as_rule(rule, index=len(self._rules) + 1)
        if rule.name in self._rules:
            raise RuleError(
                f"a rule named {rule.name!r} already exists; remove it first or use replace()",
                rule=rule.name,
                field="name",
            )
        self._rules[rule.name] = rule
        return rule

    def replace(self, rule: Rule | Mapping[str, Any]) -> Rule:
        """Swap the rule of the same name for this one (keeping its position)."""
        rule = _as_rule(rule)
        if rule.name not in self._rules:
            raise RuleError(f"no rule named {rule.name!r} to replace", rule=rule.name)
        self._rules[rule.name] = rule
        return rule

    def remove(self, name: str) -> Rule:
        try:
            return self._rules.pop(name)
        except KeyError:
            raise RuleError(f"no rule named {name!r}", rule=name) from None

    def by_name(self, name: str) -> Rule:
        try:
            return self._rules[name]
        except KeyError:
            raise RuleError(f"no rule named {name!r}", rule=name) from None

    def get(self, name: str) -> Rule | None:
        return self._rules.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._rules)

    def to_list(self) -> list[Rule]:
        return list(self._rules.values())

    def dump(self) -> str:
        return dump_rules(self._rules.values())

    def __iter__(self) -> Iterator[Rule]:
        return iter(list(self._rules.values()))

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    def __repr__(self) -> str:
        return f"RuleSet({self.names!r})"


_RULE_TYPES = (
    ThresholdRule,
    NanRule,
    PlateauRule,
    DivergenceRule,
    RunFailedRule,
    StalledRule,
    UserRule,
)


def _as_rule(rule: Rule | Mapping[str, Any], index: int | None = None) -> Rule:
    if isinstance(rule, _RULE_TYPES):
        return rule
    return parse_rule(rule, index=index)


def unique_rules(rules: Iterable[Rule]) -> list[Rule]:
    """``rules`` as a list, after checking that names are unique (for the evaluator)."""
    result = list(rules)
    seen: set[str] = set()
    for index, rule in enumerate(result, start=1):
        if rule.name in seen:
            raise RuleError(
                f"rule #{index} ({rule.name!r}): duplicate name; rule names must be unique",
                index=index,
                rule=rule.name,
                field="name",
            )
        seen.add(rule.name)
    return result


__all__ = [
    "RULE_KINDS",
    "RULE_NAME_PATTERN",
    "USER_RULE",
    "DivergenceRule",
    "MetricRule",
    "NanRule",
    "PlateauRule",
    "Rule",
    "RuleError",
    "RuleSet",
    "RunFailedRule",
    "StalledRule",
    "ThresholdRule",
    "UserRule",
    "dump_rule",
    "dump_rules",
    "load_rules",
    "loads_rules",
    "metric_matcher",
    "parse_rule",
    "parse_rules",
    "toml_string",
    "unique_rules",
]
