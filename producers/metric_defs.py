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
from typing import Any

from runstream.producers.mappings import SummaryKind
from runstream.producers.values import INT64_MAX

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


def resolve_goal(goal: Any) -> str | None:
    """``minimize`` / ``maximize`` (``min`` / ``max`` too), else None with one warning."""
    if goal is None:
        return None
    resolved = GOALS.get(goal.lower()) if isinstance(goal, str) else None
    if resolved is None:
        warn_once(f"goal {goal!r}", "runstream: define_metric(goal=%r) ignored: goal must be "
                  "'minimize' or 'maximize'", goal)  # fmt: skip
    return resolved


def resolve_summary(summary: Any, goal: str | None) -> SummaryKind | None:
    """The one summary kind runstream keeps for wandb's ``summary`` string, or None (no choice).

    The first word that can be honoured wins; every other word is warned about once.
    """
    if summary is None:
        return None
    if not isinstance(summary, str):
        warn_once(f"summary type {type(summary).__name__}", "runstream: define_metric("
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
                warn_once("best without goal", "runstream: define_metric(summary='best') "
                          "needs goal='minimize' or 'maximize' (as in wandb); 'best' is "
                          "ignored")  # fmt: skip
                continue
        elif word == "none":
            warn_once("summary none", "runstream: define_metric(summary='none'): runstream "
                      "keeps a summary value for every metric (the last one unless chosen "
                      "otherwise); 'none' is ignored")  # fmt: skip
            continue
        else:
            warn_once(f"summary {word}", "runstream: define_metric(summary=%r): %r is not one of "
                      "%s; it is ignored", summary, word, ", ".join(SUMMARY_WORDS))  # fmt: skip
            continue
        if chosen is None:
            chosen = kind
        elif kind != chosen:
            warn_once(f"summary combo {summary}", "runstream: define_metric(summary=%r): "
                      "runstream keeps one summary value per metric; %r is kept, the other "
                      "kinds are computed in SQL (run_summaries_current has min, max, mean "
                      "and last of every metric)", summary, chosen)  # fmt: skip
    return chosen


def as_step(value: Any) -> int | None:
    """A step metric's value as a step: an integer (or an integral float) from 0 to 2**63-1."""
    if isinstance(value, (bool, str, bytes)):  # float("3") would take a string
        return None
    try:
        step = operator.index(value)
    except TypeError:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if not number.is_integer():
            return None
        step = int(number)
    return step if 0 <= step <= INT64_MAX else None


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

    def step_for(self, data: Mapping[str, Any]) -> int | None:
        """The step a ``log(data)`` without ``step=`` takes, or None (runstream's own)."""
        try:
            present: dict[str, int] = {}
            for metric in self._names:
                if metric in data:
                    step = as_step(data[metric])
                    if step is not None:
                        present[metric] = step
                        self._last[metric] = step
            for key in data:
                if key in self._names:
                    continue
                definition = self._definition(key)
                if definition is None:
                    continue
                metric, sync = definition
                if metric in present:
                    return present[metric]
                if sync and metric in self._last:
                    return self._last[metric]
            if present:  # only step metrics logged: the first one's value
                return next(iter(present.values()))
        except Exception:  # a foreign mapping: log() takes care of it, with its own warning
            return None
        return None
