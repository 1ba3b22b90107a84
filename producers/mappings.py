"""``run.config`` and ``run.summary``: dicts whose changes are recorded as events."""

from __future__ import annotations

import math
import threading
import time
from argparse import Namespace
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Literal

from runstream.producers.values import MAX_NAME_LENGTH, to_json

if TYPE_CHECKING:
    from runstream.producers.run import Run
    from runstream.producers.values import Refusals

SummaryKind = Literal["min", "max", "last", "mean"]
_time = time.time


class RunConfig(MutableMapping[str, Any]):
    """The run's config: a dict whose changes are recorded as config-updated events.

    Attribute access works too (``run.config.lr``), as in wandb.
    """

    def __init__(self, run: Run, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_values", values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._values[key]
        self._run._emit("config_updated", {"config": {key: None}})  # merge patch: null removes

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def update(  # type: ignore[override] # wandb's signature, a superset of dict's
        self, d: Any = None, allow_val_change: bool | None = None, **kwargs: Any
    ) -> None:
        """Set several keys; one event records all of them. Values become JSON as
        :func:`runstream.producers.values.to_json` says (never raises for a value).

        wandb 0.31's ``Config.update(d, allow_val_change=None)``, both by position or keyword:
        ``d`` is a dict, an ``argparse.Namespace``, an object with ``keys()`` or attributes,
        or (name, value) pairs (:func:`read_config`); keyword arguments are keys too.
        ``allow_val_change`` is never a key: runstream always lets a value change (every
        change is an event)."""
        values = read_config(d, self._run._refusals)
        if kwargs:
            values.update(kwargs)
        changes = to_json(values, self._run._refusals, "config")
        if not changes:
            return
        self._values.update(changes)
        self._run._emit("config_updated", {"config": changes})

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def as_dict(self) -> dict[str, Any]:
        """A copy of the config as a plain dict (wandb's ``config.as_dict()``)."""
        return dict(self._values)

    def update_locked(
        self, d: Any, user: Any = None, _allow_val_change: bool | None = None
    ) -> None:
        """wandb's ``Config.update_locked`` (sweeps and integrations call it): as
        :meth:`update`; runstream locks no key."""
        self.update(d)

    def setdefaults(self, d: Mapping[str, Any] | Namespace) -> None:
        """Set the keys of ``d`` the config does not have yet (wandb's
        ``config.setdefaults(d)``; ``d`` as :meth:`update` takes it); one ``config_updated``
        event records them."""
        defaults = read_config(d, self._run._refusals)
        missing = {k: v for k, v in defaults.items() if k not in self._values}
        if missing:
            self.update(missing)

    def __repr__(self) -> str:
        return f"RunConfig({self._values!r})"


def read_config(d: Any, refusals: Refusals) -> dict[str, Any]:
    """What ``config.update(d)`` takes as a dict, as wandb 0.31's ``parse_config``: ``None``
    (nothing), a mapping, an ``argparse.Namespace`` or another object with attributes, an
    object with ``keys()`` (absl flags), or (name, value) pairs. A file name (``str``) is
    refused (wandb reads a YAML file; runstream does not), as is anything unreadable: one
    warning, counted in ``refused_by_kind["config"]``. Never raises."""
    if d is None:
        return {}
    if isinstance(d, (str, bytes)):
        refusals.refuse("config", f"config.update({short(d)}): a config file name is not read "
                        "(wandb reads YAML); pass a dict; it is left out", "config")  # fmt: skip
        return {}
    try:
        if isinstance(d, Mapping):
            return dict(d)
        if isinstance(d, Namespace):
            return dict(vars(d))
        if hasattr(d, "keys"):
            return {k: d[k] for k in d.keys()}  # noqa: SIM118 - keys() is what such objects have
        try:
            return dict(d)  # (name, value) pairs
        except (TypeError, ValueError):
            return dict(vars(d))
    except Exception:
        refusals.refuse("config", f"config.update() takes a dict (or argparse.Namespace), not "
                        f"{type(d).__name__}; it is left out", "config")  # fmt: skip
        return {}


def short(value: Any) -> str:
    try:
        return repr(value)[:60]
    except Exception:
        return f"<{type(value).__name__}>"


class RunSummary(MutableMapping[str, Any]):
    """The run's summary as this session sees it, by the rules the stored summary follows
    (docs/sql.md, "The summary"): by default each metric's value at its highest step (the
    latest logged of that step), or the min, max or mean chosen with ``define_metric`` over its
    points that are not NaN (None when every point is NaN; the mean of none is NaN); keys set
    explicitly win, and a key set to None is removed.

    Only explicit keys (``run.summary[k] = v``, ``update``) are sent, as ``summary_updated``
    events (and once more at ``finish()``). Values derived from metric points are computed
    where every point is, in ClickHouse (``run_summaries``) and the processors, so that a
    resumed run, whose SDK only saw its own session, does not overwrite them.

    Reads see every value logged before them: they wait (at most
    :data:`SUMMARY_READ_WAIT_SECONDS`) for the worker to have taken what was queued first.
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._explicit: dict[str, Any] = {}
        self._last: dict[str, float] = {}
        self._steps: dict[str, int] = {}  # name -> the step of its value in _last
        self._top = -(2**63)  # the highest step observed
        # Only metrics given another summary by define_metric pay for min/max/mean tracking.
        self._aggregates: dict[str, list[float]] = {}  # name -> [min, max, sum, count]
        self._kind_of: dict[str, SummaryKind] = {}
        self._synced: tuple[int, int] | None = None  # (step, lower) at the last caught-up read

    def _observe(self, metrics: Mapping[str, float], step: int) -> None:
        # Runs on the worker thread with the values it just encoded, in the run's event order.
        if step >= self._top:  # steps going up, as training loops log: every value is the last
            self._top = step
            self._last.update(metrics)
            self._steps.update(dict.fromkeys(metrics, step))
        else:  # a lower step logged late: a metric keeps its value at its highest step
            steps = self._steps
            for name, value in metrics.items():
                if step >= steps.get(name, step):
                    self._last[name] = value
                    steps[name] = step
        kinds = self._run._summary_kinds
        if not kinds:
            return
        kind_of = self._kind_of
        aggregates = self._aggregates
        for name, value in metrics.items():
            kind = kind_of.get(name)
            if kind is None:
                kind = kind_of[name] = _summary_kind(name, kinds)
            if kind == "last" or math.isnan(value):  # NaN takes no part in min, max and mean
                continue
            entry = aggregates.get(name)
            if entry is None:
                aggregates[name] = [value, value, value, 1.0]
                continue
            entry[0] = min(entry[0], value)
            entry[1] = max(entry[1], value)
            entry[2] += value
            entry[3] += 1.0

    def _sync(self) -> None:
        """Wait until the worker has seen every metrics event queued before this read.

        A marker in the queue: when the worker reaches it, it has built (and observed) every
        event before it. Every log() that queues an event moves the run's highest step or
        counts a lower one, so while neither moved since the last marker, nothing is to wait
        for, and log() pays nothing for this.
        """
        run = self._run
        if run._finished is not None:
            return  # finish() waited for the worker
        logged = (run._step, run._lower)
        if logged == self._synced:
            return
        seen = threading.Event()
        run._worker.submit((run._channel, "summary_read", _time(), _barrier_body, seen))
        run._worker._wake.set()  # do not wait for the worker's next tick
        if seen.wait(SUMMARY_READ_WAIT_SECONDS):
            self._synced = logged

    def _derived(self) -> dict[str, float | None]:
        self._sync()
        return {name: self._value(name, value) for name, value in list(self._last.items())}

    def _value(self, name: str, last: float) -> float | None:
        kind = self._kind_of.get(name, "last") if self._run._summary_kinds else "last"
        if kind == "last":
            return last
        entry = self._aggregates.get(name)
        if entry is None:  # every point NaN: no min or max (null), a mean of nothing (NaN)
            return math.nan if kind == "mean" else None
        low, high, total, count = entry
        return {"min": low, "max": high, "mean": total / count}.get(kind, last)

    def _final(self) -> dict[str, Any]:
        """What the final ``summary_updated`` carries: the explicit keys only."""
        return dict(self._explicit)

    def __getitem__(self, key: str) -> Any:
        if key in self._explicit:
            value = self._explicit[key]
            if value is None:  # set to None: removed, as the stored summary has it
                raise KeyError(key)
            return value
        self._sync()
        return self._value(key, self._last[key])  # KeyError: never logged

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._explicit[key]

    def _keys(self) -> list[str]:
        merged = {**self._derived(), **self._explicit}
        return [k for k in merged if self._explicit.get(k, 0) is not None]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set keys explicitly; one ``summary_updated`` event records them. Keys must be
        names of 1 to 512 characters (the schema's); values become JSON like config values."""
        refusals = self._run._refusals
        converted = to_json(dict(*args, **kwargs), refusals, "summary")
        changes: dict[str, Any] = {}
        for key, value in converted.items():
            if 0 < len(key) <= MAX_NAME_LENGTH:
                changes[key] = value
            else:
                refusals.refuse(key[:60], f"a summary key must have 1 to {MAX_NAME_LENGTH} "
                                "characters", "name")  # fmt: skip
        if not changes:
            return
        self._explicit.update(changes)
        self._run._emit("summary_updated", {"summary": changes})

    def __repr__(self) -> str:
        return f"RunSummary({dict(self)!r})"


SUMMARY_READ_WAIT_SECONDS = 2.0
"""How long a read of ``run.summary`` waits, at most, for the worker to see earlier logs."""


def _summary_kind(name: str, kinds: Mapping[str, SummaryKind]) -> SummaryKind:
    kind = kinds.get(name)
    if kind is not None:
        return kind
    for pattern, chosen in kinds.items():
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return chosen
    return "last"


def _barrier_body(seen: threading.Event) -> None:
    # Queued by a summary read: everything queued before it has been built when this runs.
    seen.set()
