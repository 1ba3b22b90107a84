"""``define_metric`` as wandb 0.31 documents it: a summary choice, a goal, and a step metric
(the metric another one is plotted against, ``step_metric=``), and how ``log()`` takes its step
from that step metric.

The rules (docs/sdk.md, "define_metric"; wandb's ``Run.define_metric`` reference):

- ``summary``: one of ``min``, ``max``, ``mean``, ``last``, ``best`` (with ``goal``), ``copy``,
  ``none``, or several joined by commas (``"min,max"``). runstream keeps one value per metric:
  the first of them it can honour (``best`` is ``min`` or ``max`` by the goal, ``copy`` is
  ``last``); the rest is warned about once per spelling. No ``summary`` leaves the choice as it
  was (``last`` unless another definition says otherwise).
- ``goal``: ``minimize`` or ``maximize`` (``min`` / ``max`` accepted), recorded.
- ``step_metric``: when ``log()`` gets no ``step=`` and its data holds the step metric of a name
  it logs (an integer value, or a float with an integral value, from 0 to 2**63-1), that value
  is the step of the call: the metrics land at the x value the library meant (the Hugging Face
  ``WandbCallback`` logs ``train/global_step`` with every call and defines it as the step
  metric of ``*``). With ``step_sync`` (wandb's default when ``step_metric`` is given), a call
  without the step metric uses the last value logged for it.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runstream.producers.inputs import short_repr
from runstream.producers.mappings import SummaryKind
from runstream.producers.values import INT64_MAX

if TYPE_CHECKING:
    from runstream.producers.values import Refusals

logger = logging.getLogger("runstream")

SUMMARY_WORDS = ("min", "max", "mean", "last", "best", "copy", "none")
"""The summary strings wandb 0.31 documents for ``define_metric(summary=...)``."""
GOALS = {"minimize": "minimize", "min": "minimize", "maximize": "maximize", "max": "maximize"}

_warned: set[str] = set()


def warn_once(key: str, message: str, *args: Any) -> None:
    """One warning per ``key`` in the process (a library calls define_metric at every run)."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def ignored(refusals: Refusals | None, key: str, message: str, *args: Any) -> None:
    """A define_metric argument not kept as given: counted in ``refusals`` (kind
    ``argument``), warned once per run and key; without ``refusals`` warned once."""
    if refusals is None:
        warn_once(key, message, *args)
        return
    text = message % args if args else message
    refusals.note("define_metric", text.removeprefix("runstream: "), "argument", key=key)


def resolve_goal(goal: Any, refusals: Refusals | None = None) -> str | None:
    """``minimize`` / ``maximize`` (``min`` / ``max`` too), else None with one warning."""
    if goal is None:
        return None
    resolved = GOALS.get(goal.lower()) if isinstance(goal, str) else None
    if resolved is None:
        ignored(refusals, f"goal {goal!r}", "runstream: define_metric(goal=%r) ignored: goal "
                "must be 'minimize' or 'maximize'", goal)  # fmt: skip
    return resolved


def resolve_summary(
    summary: Any, goal: str | None, refusals: Refusals | None = None
) -> SummaryKind | None:
    """The one summary kind runstream keeps for wandb's ``summary`` string, or None (no choice).

    The first word that can be honoured wins; every other word is warned about once and
    counted in ``refusals`` (``refused_by_kind["argument"]``), so ``FinishResult.refused``
    says a definition was not kept as given.
    """
    if summary is None:
        return None
    if not isinstance(summary, str):
        ignored(refusals, f"summary type {type(summary).__name__}", "runstream: define_metric("
                  "summary=%r) ignored: summary is a string such as 'min' or 'min,max'",
                  summary)  # fmt: skip
        return None
    words = [word.strip().lower() for word in summary.split(",") if word.strip()]
    chosen: SummaryKind | None = None
    for word in words:
        kind: SummaryKind | None
        if word in ("min", "max", "mean", "last"):
            kind = word  # type: ignore[assignment]
        elif word == "copy":  # wandb: the summary is the value as last logged
            kind = "last"
        elif word == "best":
            kind = {"minimize": "min", "maximize": "max"}.get(goal or "")  # type: ignore[assignment]
            if kind is None:
                ignored(refusals, "best without goal", "runstream: define_metric(summary='best') "
                          "needs goal='minimize' or 'maximize' (as in wandb); 'best' is "
                          "ignored")  # fmt: skip
                continue
        elif word == "none":
            ignored(refusals, "summary none", "runstream: define_metric(summary='none'): runstream "
                      "keeps a summary value for every metric (the last one unless chosen "
                      "otherwise); 'none' is ignored")  # fmt: skip
            continue
        else:
            ignored(refusals, f"summary {word}", "runstream: define_metric(summary=%r): %r is not "
                    "one of %s; it is ignored", summary, word, ", ".join(SUMMARY_WORDS)
            )  # fmt: skip
            continue
        if chosen is None:
            chosen = kind
        elif kind != chosen:
            ignored(refusals, f"summary combo {summary}", "runstream: define_metric(summary=%r): "
                      "runstream keeps one summary value per metric; %r is kept, the other "
                      "kinds are computed in SQL (run_summaries_current has min, max, mean "
                      "and last of every metric)", summary, chosen)  # fmt: skip
    return chosen


def as_step(value: Any) -> int | None:
    """A step metric's value as a step: an integer (or an integral float) from 0 to 2**63-1."""
    step, _ = step_or_reason(value)
    return step


def step_or_reason(value: Any) -> tuple[int | None, str]:
    """``(step, "")`` for a step metric's value that is a step (an integer, or a float with an
    integral value, from 0 to 2**63-1), else ``(None, why not)``: the kind of value, for one
    warning per kind."""
    if isinstance(value, (bool, str, bytes)):  # float("3") would take a string
        return None, f"not a number but a {type(value).__name__}"
    try:
        step = operator.index(value)
    except TypeError:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return None, f"not a number but a {type(value).__name__}"
        if not number.is_integer():
            return None, "not a whole number (a fraction, nan or infinity)"
        step = int(number)
    if step < 0:
        return None, "negative"
    if step > INT64_MAX:
        return None, "above 2**63-1 (ClickHouse Int64)"
    return step, ""


class StepMetrics:
    """The step metrics of a run's definitions, and the step a ``log()`` call takes from them.

    Only a run with at least one ``step_metric`` has one of these (``log()`` checks one
    attribute otherwise).
    """

    def __init__(self) -> None:
        self._defs: dict[str, tuple[str, bool]] = {}  # name or prefix* -> (step metric, sync)
        self._order: list[str] = []  # patterns in the order first defined
        self._names: set[str] = set()  # every step metric
        self._last: dict[str, int] = {}  # step metric -> last value logged
        self._of: dict[str, tuple[str, bool] | None] = {}  # logged name -> its definition

    def define(self, name: str, step_metric: str, step_sync: bool) -> None:
        if name not in self._defs:
            self._order.append(name)
        self._defs[name] = (step_metric, step_sync)
        self._names.add(step_metric)
        self._of.clear()

    def _definition(self, name: str) -> tuple[str, bool] | None:
        try:
            return self._of[name]
        except KeyError:
            pass
        found = self._defs.get(name)
        if found is None:
            for pattern in self._order:  # the first-defined matching prefix* pattern
                if pattern.endswith("*") and name.startswith(pattern[:-1]):
                    found = self._defs[pattern]
                    break
        self._of[name] = found
        return found

    def split(
        self, data: Mapping[str, Any], refusals: Refusals
    ) -> list[tuple[int | None, dict[str, Any]]] | None:
        """The steps a ``log(data)`` without ``step=`` stores its keys at: ``[(step, keys)]`` in
        the order first met, ``None`` for runstream's own counter (``log()``'s rule without
        ``step=``); ``None`` for the whole call when no key has a step metric.

        Each key goes to the value of its own step metric in ``data`` (two step metrics in one
        call, ``global_step`` and ``epoch``: two steps). A step metric given a value that is
        not a step (1.5, -3, nan, 2**64) does not set a step: the keys plotted against it take
        runstream's counter, with one warning per kind of value, counted in
        ``refused_by_kind["step"]``. Without the step metric in ``data`` a key takes its last
        value (``step_sync``), else the counter. A step metric's own key is at its own value
        (the counter when that is not a step), whatever it is plotted against; keys without a
        definition go with the first key that has one.
        """
        present: dict[str, int] = {}
        bad: set[str] = set()
        for name in self._names:
            if name in data:
                value = data[name]
                given, why = step_or_reason(value)
                if given is not None:
                    present[name] = given
                    self._last[name] = given
                else:
                    bad.add(name)
                    refusals.note(
                        "step metric",
                        f"step metric {name[:60]!r} = {short_repr(value, 40)} is {why}: not a "
                        "step (0 to 2**63-1); the metrics plotted against it in that call are "
                        "stored at runstream's step, as a log() without step=",
                        "step",
                        key=f"step metric {why}",
                    )
        groups: dict[int | None, dict[str, Any]] = {}
        loose: dict[str, Any] = {}  # keys with no step metric of their own
        found = False
        for key, value in data.items():
            metric: str | None
            if key in self._names:  # a step metric is at its own value (the axis it gives)
                metric, sync = key, False
            elif (definition := self._definition(key)) is not None:
                metric, sync = definition
            else:
                loose[key] = value
                continue
            found = True
            if metric in present:
                step: int | None = present[metric]
            elif metric in bad:
                step = None
            elif sync and metric in self._last:
                step = self._last[metric]
            else:
                step = None
            groups.setdefault(step, {})[key] = value
        if not found:
            return None
        if loose:
            next(iter(groups.values())).update(loose)
        return list(groups.items())
