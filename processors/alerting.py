"""Alert evaluation: rules applied to the events of runs, one alert per episode.

:class:`AlertEvaluator` is pure and deterministic: no I/O, no clock of its own. Every timestamp it
writes comes from an event (``ts``) or from the caller (``run_crashed``, ``run_revived``,
``tick``), so replaying the same events from scratch produces the same alerts, ids and times.

Episodes. A rule firing for a run (and metric) opens an episode: one :class:`Alert` whose id is
``alert_id(rule, project, run_id, metric, n)`` with ``n`` = 1, 2, ... per (rule, run, metric).
While it is open the condition does not fire again; when the condition clears the evaluator
emits the same alert again with ``resolved_at`` and ``updated_at`` set (a new version of the
same row in ClickHouse). Alerts of ``run.alert()`` (rule kind ``user``) are the exception: they
are never resolved and keep the event id as their id, like the row the sink already writes.

Order. Events of a run must arrive in ``seq`` order (the events topic is keyed by run, so they
do); an event whose ``seq`` is not above the last one seen for its run is a re-sent duplicate and
is ignored.

State. Everything the evaluator remembers is per run, so it can live in a faust table keyed by
run. :meth:`AlertEvaluator.state_of` returns one run's state as plain JSON data (no NaN, no
datetimes: ISO strings), :meth:`AlertEvaluator.load_run_state` puts it back. Layout::

    {
      "v": 1, "project": "vision", "run_id": "abc123",
      "seq": 41,                      # last seq processed (-1: none); duplicates are <= this
      "tags": ["baseline"], "group": "sweep-1",
      "step": 40,                     # last step seen (metrics_logged, heartbeat), or null
      "step_at": "2026-...+00:00",    # when that step first appeared (stalled rules)
      "seen_at": "2026-...+00:00",    # ts of the last event of the run
      "finished": false,
      "crashed_at": null,             # set by run_crashed() until the run shows life again
      "episodes": {"loss-high": {"loss": 2}},   # episodes opened so far, per rule and metric
      "tracks": [                     # condition state per (rule, metric)
        {"rule": "loss-high", "fp": "<rule fingerprint>", "metric": "loss",
         "open": null | {<the open alert, as on the alerts topic>},
         "count": 1}                  # kind-specific: threshold count; plateau best,
      ],                              # best_step, since; divergence n, idx, val; run_failed crash
      "orphans": [ {<alert>} ]        # open alerts of rules since removed or changed, resolved
    }                                 # at the run's next event (or tick)

With faust, key a table by the run id (the key of the events topic, so the table is
co-partitioned with the stream) and let the evaluator read it lazily::

    table = app.Table("alert-state", default=None)
    evaluator = AlertEvaluator(rules, loader=lambda project, run_id: table.get(run_id))

    @app.agent(events_topic)
    async def evaluate(stream):
        async for raw in stream:
            event = decode(raw)
            for alert in evaluator.observe(event):
                await alerts_topic.send(key=alert.run_id, value=alert.to_json())
            for project, run_id in evaluator.take_dirty():
                table[run_id] = evaluator.state_of(project, run_id)

Writing the state after every event is the simple, exact choice. To write less often (one
changelog record per run per batch), call ``take_dirty()`` every N events: after a restart the
runs then resume from a slightly older state, and because alert ids are deterministic an
alert fired again from that state carries the id it had the first time. Drop finished runs
with :meth:`AlertEvaluator.forget` (and ``del table[run_id]``) once nothing more is expected.

Throughput. Metric globs are compiled once; the rules that apply to a (run, metric) pair are
looked up once and cached on the run, so a metric no rule watches costs one dict lookup, and a
watched one a method call per rule.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

import orjson

from runstream.errors import RunstreamError
from runstream.processors.alert import Alert, alert_id
from runstream.processors.rules import (
    USER_RULE,
    DivergenceRule,
    NanRule,
    PlateauRule,
    Rule,
    RunFailedRule,
    StalledRule,
    ThresholdRule,
    metric_matcher,
    unique_rules,
)
from runstream.schemas.events import (
    AlertRaisedEvent,
    AnyEvent,
    HeartbeatEvent,
    RunFinishedEvent,
    RunResumedEvent,
    RunStartedEvent,
    TagsUpdatedEvent,
)

STATE_VERSION = 1
METRIC_KINDS = frozenset({"threshold", "nan", "plateau", "divergence"})
_GLOB_CACHE_MAX = 100_000  # distinct metric names remembered across runs before starting over

Loader = Callable[[str, str], Mapping[str, Any] | None]
"""``(project, run_id) -> state_of(...) data, or None``: where a run's state is kept."""

_isfinite = math.isfinite
_isnan = math.isnan
_INF = math.inf


class AlertStateError(RunstreamError, ValueError):
    """Saved evaluator state cannot be read (wrong shape or a newer version)."""


# --- formatting -------------------------------------------------------------------------------
def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AlertStateError(f"expected an ISO timestamp, got {value!r}")
    return datetime.fromisoformat(value)


def _check_aware(at: datetime, name: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc))")


# --- compiled rules ---------------------------------------------------------------------------
class _Spec:
    """A rule prepared for evaluation: matcher compiled, bounds precomputed."""

    __slots__ = ("description", "fp", "hi", "kind", "lo", "match", "name", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = rule.name
        self.kind: str = rule.kind
        # The fingerprint is stored next to each run's condition state: state saved under a
        # different version of the rule (new threshold, level...) is not reused.
        self.fp = hashlib.sha256(rule.model_dump_json().encode()).hexdigest()[:16]
        self.match: Callable[[str], bool] = (
            metric_matcher(rule.metric) if isinstance(rule, METRIC_RULE_TYPES) else _never
        )
        self.lo = -_INF
        self.hi = _INF
        if isinstance(rule, ThresholdRule):
            # None becomes an infinite bound, so the hot path is two float comparisons.
            self.lo = rule.below if rule.below is not None else -_INF
            self.hi = rule.above if rule.above is not None else _INF
        self.description = _describe(rule)


def _never(name: str) -> bool:
    return False


METRIC_RULE_TYPES = (ThresholdRule, NanRule, PlateauRule, DivergenceRule)


def _metric_desc(pattern: str) -> str:
    if pattern == "*":
        return "a metric"
    if set("*?[").intersection(pattern):
        return f"a metric matching {pattern!r}"
    return pattern


def _or(words: Iterable[str]) -> str:
    items = list(words)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _describe(rule: Rule) -> str:
    if isinstance(rule, ThresholdRule):
        metric = _metric_desc(rule.metric)
        if rule.above is not None and rule.below is not None:
            cond = f"{metric} outside [{_num(rule.below)}, {_num(rule.above)}]"
        elif rule.above is not None:
            cond = f"{metric} > {_num(rule.above)}"
        else:
            cond = f"{metric} < {_num(rule.below)}"  # type: ignore[arg-type]
        return cond + (f" for {rule.for_steps} steps" if rule.for_steps > 1 else "")
    if isinstance(rule, NanRule):
        return f"{_metric_desc(rule.metric)} is NaN or infinite"
    if isinstance(rule, PlateauRule):
        goal = "decrease" if rule.mode == "min" else "increase"
        delta = f" by more than {_num(rule.min_delta)}" if rule.min_delta else ""
        return f"{_metric_desc(rule.metric)} did not {goal}{delta} for {rule.patience} steps"
    if isinstance(rule, DivergenceRule):
        return (
            f"{_metric_desc(rule.metric)} more than {_num(rule.rise_pct)}% above its minimum "
            f"of the previous {rule.window} steps"
        )
    if isinstance(rule, RunFailedRule):
        return f"the run ends {_or(rule.statuses)}"
    if isinstance(rule, StalledRule):
        return f"no new step for {_duration(rule.after_seconds)} while the run is alive"
    return "alerts raised by the run"


# --- per (rule, run, metric) condition state --------------------------------------------------
class _Track:
    """The condition state of one rule for one run (and metric), and its open episode."""

    __slots__ = ("metric", "open", "run", "spec")
    kind: ClassVar[str] = ""

    def __init__(self, spec: _Spec, run: _Run, metric: str) -> None:
        self.spec = spec
        self.run = run
        self.metric = metric
        self.open: Alert | None = None

    def fire(
        self, at: datetime, seq: int | None, value: float | None, step: int | None, title: str
    ) -> Alert:
        run = self.run
        spec = self.spec
        key = (spec.name, self.metric)
        episode = run.episodes.get(key, 0) + 1
        run.episodes[key] = episode
        alert = Alert(
            alert_id=alert_id(spec.name, run.project, run.run_id, self.metric, episode),
            rule=spec.name,
            project=run.project,
            run_id=run.run_id,
            metric=self.metric,
            value=value,
            step=step,
            level=spec.rule.level,
            title=title,
            text=f"Rule {spec.name!r}: {spec.description}.",
            fired_at=at,
            source_seq=seq,
            updated_at=at,  # never the wall clock: a replay must write the same record
        )
        self.open = alert
        return alert

    def resolve(self, at: datetime, reason: str) -> Alert:
        alert = self.open
        assert alert is not None
        self.open = None
        return _resolved(alert, at, reason)

    def dump(self) -> dict[str, Any]:
        return {}

    def load(self, data: Mapping[str, Any]) -> None:
        pass


def _resolved(alert: Alert, at: datetime, reason: str) -> Alert:
    # Value, step and title stay those of the firing: the latest version is the one kept.
    return alert.model_copy(
        update={"resolved_at": at, "updated_at": at, "text": f"{alert.text} Resolved: {reason}."}
    )


class _MetricTrack(_Track):
    __slots__ = ()

    def update(self, value: float, step: int, event: AnyEvent, out: list[Alert]) -> None:
        raise NotImplementedError


class _ThresholdTrack(_MetricTrack):
    __slots__ = ("count",)
    kind = "threshold"

    def __init__(self, spec: _Spec, run: _Run, metric: str) -> None:
        super().__init__(spec, run, metric)
        self.count = 0  # consecutive steps the condition has held

    def update(self, value: float, step: int, event: AnyEvent, out: list[Alert]) -> None:
        spec = self.spec
        if value > spec.hi or value < spec.lo:
            self.count += 1
            if self.open is None and self.count >= spec.rule.for_steps:  # type: ignore[union-attr]
                out.append(self.fire(event.ts, event.seq, value, step, self._title(value, step)))
        elif not _isnan(value):  # NaN tells nothing about a bound: it neither counts nor clears
            self.count = 0
            if self.open is not None:
                reason = f"{self.metric} back to {_num(value)} at step {step}"
                out.append(self.resolve(event.ts, reason))

    def _title(self, value: float, step: int) -> str:
        spec = self.spec
        side = f"above {_num(spec.hi)}" if value > spec.hi else f"below {_num(spec.lo)}"
        steps = f" for {self.count} steps" if self.count > 1 else ""
        return f"{self.metric} {side}{steps} ({_num(value)} at step {step})"

    def dump(self) -> dict[str, Any]:
        return {"count": self.count}

    def load(self, data: Mapping[str, Any]) -> None:
        self.count = int(data.get("count", 0))


class _NanTrack(_MetricTrack):
    __slots__ = ()
    kind = "nan"

    def update(self, value: float, step: int, event: AnyEvent, out: list[Alert]) -> None:
        if _isfinite(value):
            if self.open is not None:
                reason = f"{self.metric} finite again ({_num(value)} at step {step})"
                out.append(self.resolve(event.ts, reason))
        elif self.open is None:
            title = f"{self.metric} is {_num(value)} at step {step}"
            out.append(self.fire(event.ts, event.seq, value, step, title))


class _PlateauTrack(_MetricTrack):
    __slots__ = ("best", "best_step", "since")
    kind = "plateau"

    def __init__(self, spec: _Spec, run: _Run, metric: str) -> None:
        super().__init__(spec, run, metric)
        self.best: float | None = None
        self.best_step = 0
        self.since = 0  # steps since the last improvement

    def update(self, value: float, step: int, event: AnyEvent, out: list[Alert]) -> None:
        if not _isfinite(value):
            return  # a NaN or infinite value is the nan rule's business, not progress
        best = self.best
        if best is None:
            self.best = value
            self.best_step = step
            return
        rule: PlateauRule = self.spec.rule  # type: ignore[assignment]
        if rule.mode == "min":
            improved = value < best - rule.min_delta
        else:
            improved = value > best + rule.min_delta
        if improved:
            self.best = value
            self.best_step = step
            self.since = 0
            if self.open is not None:
                reason = f"{self.metric} improved to {_num(value)} at step {step}"
                out.append(self.resolve(event.ts, reason))
            return
        self.since += 1
        if self.open is None and self.since >= rule.patience:
            title = (
                f"{self.metric} has not improved for {self.since} steps "
                f"(best {_num(best)} at step {self.best_step}; {_num(value)} at step {step})"
            )
            out.append(self.fire(event.ts, event.seq, value, step, title))

    def dump(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "since": self.since}

    def load(self, data: Mapping[str, Any]) -> None:
        best = data.get("best")
        self.best = float(best) if best is not None else None
        self.best_step = int(data.get("best_step", 0))
        self.since = int(data.get("since", 0))


class _DivergenceTrack(_MetricTrack):
    """Sliding-window minimum (a monotonic deque): O(1) amortized per value for any window."""

    __slots__ = ("idx", "n", "val")
    kind = "divergence"

    def __init__(self, spec: _Spec, run: _Run, metric: str) -> None:
        super().__init__(spec, run, metric)
        self.n = 0  # values seen so far; the index of the next one
        # Candidates for the window's minimum: increasing values, with their indexes. Two
        # deques rather than one of pairs: no tuple per value.
        self.idx: deque[int] = deque()
        self.val: deque[float] = deque()

    def update(self, value: float, step: int, event: AnyEvent, out: list[Alert]) -> None:
        if not _isfinite(value):
            return  # neither a rise nor a new minimum: the nan rule watches those
        rule: DivergenceRule = self.spec.rule  # type: ignore[assignment]
        n = self.n
        idx = self.idx
        val = self.val
        cutoff = n - rule.window
        while idx and idx[0] < cutoff:
            idx.popleft()
            val.popleft()
        if val:
            best = val[0]
            if value > best + abs(best) * rule.rise_pct / 100.0:
                if self.open is None:
                    out.append(
                        self.fire(event.ts, event.seq, value, step, self._title(best, value, step))
                    )
            elif self.open is not None:
                reason = (
                    f"{self.metric} back within {_num(rule.rise_pct)}% of its minimum "
                    f"({_num(value)} at step {step})"
                )
                out.append(self.resolve(event.ts, reason))
        while val and val[-1] >= value:
            idx.pop()
            val.pop()
        idx.append(n)
        val.append(value)
        self.n = n + 1

    def _title(self, best: float, value: float, step: int) -> str:
        window: int = self.spec.rule.window  # type: ignore[union-attr]
        rise = f"{(value - best) / abs(best) * 100:.0f}% " if best else ""
        return (
            f"{self.metric} diverging: {_num(value)} at step {step} is {rise}above the minimum "
            f"{_num(best)} of the last {window} steps"
        )

    def dump(self) -> dict[str, Any]:
        return {"n": self.n, "idx": list(self.idx), "val": list(self.val)}

    def load(self, data: Mapping[str, Any]) -> None:
        self.n = int(data.get("n", 0))
        self.idx = deque(int(i) for i in data.get("idx", ()))
        self.val = deque(float(v) for v in data.get("val", ()))
        if len(self.idx) != len(self.val):
            raise AlertStateError("divergence state: 'idx' and 'val' differ in length")


class _FailedTrack(_Track):
    __slots__ = ("crash",)
    kind = "run_failed"

    def __init__(self, spec: _Spec, run: _Run, metric: str) -> None:
        super().__init__(spec, run, metric)
        self.crash = False  # the open episode came from run_crashed(), not from run_finished

    def dump(self) -> dict[str, Any]:
        return {"crash": self.crash}

    def load(self, data: Mapping[str, Any]) -> None:
        self.crash = bool(data.get("crash", False))


class _StalledTrack(_Track):
    __slots__ = ()
    kind = "stalled"


_TRACK_TYPES: dict[str, type[_Track]] = {
    cls.kind: cls
    for cls in (
        _ThresholdTrack,
        _NanTrack,
        _PlateauTrack,
        _DivergenceTrack,
        _FailedTrack,
        _StalledTrack,
    )
}


_T = TypeVar("_T", bound=_Track)


def _typed(track: _Track, cls: type[_T]) -> _T:
    # Only on cache misses: a (rule, metric) track's type follows from the rule's kind.
    if not isinstance(track, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(track).__name__}")
    return track


# --- per run ----------------------------------------------------------------------------------
class _Run:
    __slots__ = (
        "crashed_at",
        "dirty",
        "episodes",
        "failed",
        "finished",
        "group",
        "metric_specs",
        "metric_tracks",
        "orphans",
        "project",
        "quiet",
        "run_id",
        "seen_at",
        "seq",
        "stalled",
        "step",
        "step_at",
        "tags",
        "tracks",
        "users",
    )

    def __init__(self, project: str, run_id: str) -> None:
        self.project = project
        self.run_id = run_id
        self.seq = -1
        self.tags: frozenset[str] = frozenset()
        self.group: str | None = None
        self.step: int | None = None
        self.step_at: datetime | None = None
        self.seen_at: datetime | None = None
        self.finished = False
        self.crashed_at: datetime | None = None
        self.episodes: dict[tuple[str, str], int] = {}
        self.tracks: dict[tuple[str, str], _Track] = {}
        self.orphans: list[Alert] = []
        self.dirty = False
        # Derived from the rules and the run's tags/group; rebuilt by _refilter().
        self.metric_specs: frozenset[_Spec] = frozenset()
        self.metric_tracks: dict[str, tuple[_MetricTrack, ...]] = {}
        self.quiet: set[str] = set()  # metric names no rule watches in this run
        self.failed: tuple[_FailedTrack, ...] = ()
        self.stalled: tuple[_StalledTrack, ...] = ()
        self.users: tuple[_Spec, ...] = ()


# --- the evaluator ----------------------------------------------------------------------------
class AlertEvaluator:
    """Applies alert rules to events; returns the alerts (firings and resolutions) they cause.

    ``loader``, when given, is asked for the saved state of a run the evaluator has not seen
    yet (see the module docstring); without it an unknown run starts from scratch.
    """

    def __init__(self, rules: Iterable[Rule], *, loader: Loader | None = None) -> None:
        self._loader = loader
        self._runs: dict[str, dict[str, _Run]] = {}
        self._dirty: list[_Run] = []
        self._compile(rules)

    # -- rules --
    def _compile(self, rules: Iterable[Rule]) -> None:
        self._rules = unique_rules(rules)
        self._specs = [_Spec(rule) for rule in self._rules if rule.enabled]
        self._by_name = {spec.name: spec for spec in self._specs}
        self._metric_specs = [spec for spec in self._specs if spec.kind in METRIC_KINDS]
        self._glob_cache: dict[str, tuple[_Spec, ...]] = {}

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules)

    def set_rules(self, rules: Iterable[Rule], at: datetime) -> list[Alert]:
        """Switch to a new rule list (the API changed rules).

        Condition state of unchanged rules is kept. Open episodes of removed, disabled or changed
        rules are resolved at ``at`` for the runs in memory, and at their next event for runs
        loaded later from saved state.
        """
        _check_aware(at, "at")
        self._compile(rules)
        out: list[Alert] = []
        for run in self._all_runs():
            self._flush_orphans(run, at, out)
            self._refilter(run, at, out)
            self._mark(run)
        return out

    def _refilter(self, run: _Run, at: datetime | None, out: list[Alert] | None) -> None:
        """Recompute which rules watch ``run`` (after a rule or tag change) and drop the state
        of those that no longer do; their open episodes are resolved at ``at`` (or, without a
        time, kept as orphans for the next call that has one)."""
        applicable = [
            spec for spec in self._specs if spec.rule.applies_to(run.project, run.tags, run.group)
        ]
        by_name = {spec.name: spec for spec in applicable}
        for key, track in list(run.tracks.items()):
            spec = by_name.get(key[0])
            if spec is not None and spec.fp == track.spec.fp:
                track.spec = spec
                continue
            del run.tracks[key]
            if track.open is None:
                continue
            if at is None or out is None:
                run.orphans.append(track.open)
                continue
            if key[0] not in self._by_name:
                reason = "the rule was removed or disabled"
            elif spec is None:
                reason = "the rule no longer applies to this run (project, tags or group)"
            else:
                reason = "the rule was changed"
            out.append(track.resolve(at, reason))
        run.metric_specs = frozenset(s for s in applicable if s.kind in METRIC_KINDS)
        run.metric_tracks = {}
        run.quiet = set()
        run.failed = tuple(
            _typed(self._track(run, s, ""), _FailedTrack)
            for s in applicable
            if s.kind == "run_failed"
        )
        run.stalled = tuple(
            _typed(self._track(run, s, ""), _StalledTrack)
            for s in applicable
            if s.kind == "stalled"
        )
        run.users = tuple(s for s in applicable if s.kind == "user")

    @staticmethod
    def _track(run: _Run, spec: _Spec, metric: str) -> _Track:
        key = (spec.name, metric)
        track = run.tracks.get(key)
        if track is None:
            track = _TRACK_TYPES[spec.kind](spec, run, metric)
            run.tracks[key] = track
        return track

    def _tracks_for(self, run: _Run, name: str) -> tuple[_MetricTrack, ...]:
        specs = self._glob_cache.get(name)
        if specs is None:
            specs = tuple(spec for spec in self._metric_specs if spec.match(name))
            if len(self._glob_cache) >= _GLOB_CACHE_MAX:
                self._glob_cache.clear()  # bounded: arbitrary metric names must not grow it
            self._glob_cache[name] = specs
        allowed = run.metric_specs
        tracks = tuple(
            _typed(self._track(run, spec, name), _MetricTrack) for spec in specs if spec in allowed
        )
        run.metric_tracks[name] = tracks
        if not tracks:
            run.quiet.add(name)
        return tracks

    # -- runs --
    def _get(self, project: str, run_id: str) -> _Run:
        runs = self._runs.get(project)
        run = runs.get(run_id) if runs is not None else None
        if run is None:
            run = self._hydrate(project, run_id)
        return run

    def _hydrate(self, project: str, run_id: str) -> _Run:
        data = self._loader(project, run_id) if self._loader is not None else None
        if data is not None:
            run = self._load(data)
            if run.project != project or run.run_id != run_id:
                raise AlertStateError(
                    f"the loader returned the state of {run.project}/{run.run_id} "
                    f"for {project}/{run_id}"
                )
        else:
            run = _Run(project, run_id)
            self._refilter(run, None, None)
        self._runs.setdefault(project, {})[run_id] = run
        return run

    def _all_runs(self) -> list[_Run]:
        return [run for runs in self._runs.values() for run in runs.values()]

    def _mark(self, run: _Run) -> None:
        if not run.dirty:
            run.dirty = True
            self._dirty.append(run)

    def _flush_orphans(self, run: _Run, at: datetime, out: list[Alert]) -> None:
        for alert in run.orphans:
            out.append(_resolved(alert, at, "the rule was removed or changed"))
        run.orphans.clear()

    # -- events --
    def observe(self, event: AnyEvent) -> list[Alert]:
        """Feed one decoded event; returns the alerts it fires or resolves (often none)."""
        runs = self._runs.get(event.project)
        run = runs.get(event.run_id) if runs is not None else None
        if run is None:
            run = self._hydrate(event.project, event.run_id)
        seq = event.seq
        if seq <= run.seq:
            return []  # re-sent or replayed: already processed
        run.seq = seq
        if not run.dirty:
            run.dirty = True
            self._dirty.append(run)
        out: list[Alert] = []
        ts = event.ts
        if run.step_at is None:
            run.step_at = ts  # a run that never logs a step is stalled from its first event
        if run.orphans:
            self._flush_orphans(run, ts, out)
        if run.crashed_at is not None and ts > run.crashed_at:
            self._revive(run, ts, out)

        if getattr(event, "type", None) == "metrics_logged":  # also decoding.PlainMetrics
            body = event.body  # type: ignore[attr-defined]
            step = body.step
            if step != run.step:
                self._advance(run, step, ts, out)
            metrics = body.metrics
            if not metrics.keys() <= run.quiet:  # a C loop: most names have no rule
                cache = run.metric_tracks
                for name, value in metrics.items():
                    tracks = cache.get(name)
                    if tracks is None:
                        tracks = self._tracks_for(run, name)
                    for track in tracks:
                        track.update(value, step, event, out)
        elif isinstance(event, HeartbeatEvent):
            hb_step = event.body.step
            if hb_step is not None and hb_step != run.step:
                self._advance(run, hb_step, ts, out)
        elif isinstance(event, RunStartedEvent):
            run.tags = frozenset(event.body.tags)
            run.group = event.body.group
            self._refilter(run, ts, out)
        elif isinstance(event, TagsUpdatedEvent):
            tags = frozenset(event.body.tags)
            if tags != run.tags:
                run.tags = tags
                self._refilter(run, ts, out)
        elif isinstance(event, AlertRaisedEvent):
            if run.users:
                out.append(self._user_alert(event))
        elif isinstance(event, RunFinishedEvent):
            self._finished(run, event, out)
        elif isinstance(event, RunResumedEvent):
            self._resumed(run, event, out)

        if run.stalled:
            self._check_stalled(run, ts, seq, out, heard_recently=False)
        run.seen_at = ts
        return out

    def _advance(self, run: _Run, step: int, ts: datetime, out: list[Alert]) -> None:
        run.step = step
        run.step_at = ts
        for track in run.stalled:
            if track.open is not None:
                out.append(track.resolve(ts, f"new step {step}"))

    def _user_alert(self, event: AlertRaisedEvent) -> Alert:
        # Field for field the row the sink's alerts_mv writes for this event, so the two
        # versions of the alert are one row in ClickHouse (same alert_id, rule and content).
        body = event.body
        return Alert(
            alert_id=event.id,
            rule=USER_RULE,
            project=event.project,
            run_id=event.run_id,
            level=body.level,
            title=body.title,
            text=body.text,
            fired_at=event.ts,
            source_seq=event.seq,
            updated_at=event.ts,
        )

    def _finished(self, run: _Run, event: RunFinishedEvent, out: list[Alert]) -> None:
        ts = event.ts
        status = event.body.status
        run.finished = True
        run.crashed_at = None
        for track in run.failed:
            rule: RunFailedRule = track.spec.rule  # type: ignore[assignment]
            if status in rule.statuses:
                if track.open is None:
                    title = f"run {status} (exit code {event.body.exit_code})"
                    out.append(track.fire(ts, event.seq, None, run.step, title))
                    track.crash = False
            elif track.open is not None:
                out.append(track.resolve(ts, f"the run finished with status {status}"))
        for stalled in run.stalled:
            if stalled.open is not None:
                out.append(stalled.resolve(ts, "the run ended"))

    def _resumed(self, run: _Run, event: RunResumedEvent, out: list[Alert]) -> None:
        ts = event.ts
        run.finished = False
        run.crashed_at = None
        run.step_at = ts  # the stall clock restarts with the new process
        if event.body.step is not None:
            run.step = event.body.step
        for track in run.failed:
            if track.open is not None:
                out.append(track.resolve(ts, "the run resumed"))

    def _revive(self, run: _Run, at: datetime, out: list[Alert]) -> None:
        run.crashed_at = None
        run.step_at = at  # it was silent, not stalled: the stall clock restarts
        for track in run.failed:
            if track.open is not None and track.crash:
                out.append(track.resolve(at, "the run is alive again"))

    def _check_stalled(
        self,
        run: _Run,
        now: datetime,
        seq: int | None,
        out: list[Alert],
        *,
        heard_recently: bool,
    ) -> None:
        if run.finished or run.crashed_at is not None or run.step_at is None:
            return
        elapsed = (now - run.step_at).total_seconds()
        for track in run.stalled:
            if track.open is not None:
                continue
            after: float = track.spec.rule.after_seconds  # type: ignore[union-attr]
            if elapsed < after:
                continue
            # From tick(): only a run heard from within the period counts as alive; a silent
            # one may be dead, which is the crash detector's call, not a stall.
            if heard_recently and (
                run.seen_at is None or (now - run.seen_at).total_seconds() >= after
            ):
                continue
            last = f"last step {run.step}" if run.step is not None else "no step logged yet"
            title = f"no new step for {_duration(elapsed)} ({last})"
            out.append(track.fire(now, seq, elapsed, run.step, title))

    # -- calls from the heartbeat tracking and the clock --
    def run_crashed(self, project: str, run_id: str, at: datetime) -> list[Alert]:
        """The run stopped sending heartbeats (declared by the processors at ``at``).

        Fires ``run_failed`` rules that include ``crashed``; resolves open stalls. Ignored for
        a run that finished or is already declared crashed.
        """
        _check_aware(at, "at")
        run = self._get(project, run_id)
        out: list[Alert] = []
        self._mark(run)
        self._flush_orphans(run, at, out)
        if run.finished or run.crashed_at is not None:
            return out
        run.crashed_at = at
        since = run.seen_at.astimezone(timezone.utc) if run.seen_at is not None else None
        title = "run crashed: no heartbeat" + (
            f" since {since:%Y-%m-%d %H:%M:%S} UTC" if since is not None else ""
        )
        for track in run.failed:
            rule: RunFailedRule = track.spec.rule  # type: ignore[assignment]
            if "crashed" in rule.statuses and track.open is None:
                out.append(track.fire(at, None, None, run.step, title))
                track.crash = True
        for stalled in run.stalled:
            if stalled.open is not None:
                out.append(stalled.resolve(at, "the run stopped sending heartbeats"))
        return out

    def run_revived(self, project: str, run_id: str, at: datetime) -> list[Alert]:
        """A run declared crashed sent a heartbeat again: resolves the crash episodes.

        An event of the run newer than the crash does the same by itself.
        """
        _check_aware(at, "at")
        run = self._get(project, run_id)
        out: list[Alert] = []
        self._mark(run)
        self._flush_orphans(run, at, out)
        if run.crashed_at is not None:
            self._revive(run, at, out)
        return out

    def tick(self, now: datetime) -> list[Alert]:
        """Time-driven checks (stalled rules) of every run in memory, at ``now``.

        Heartbeats check stalls too, at their own ``ts``; ticks catch them between heartbeats.
        """
        _check_aware(now, "now")
        out: list[Alert] = []
        for run in self._all_runs():
            before = len(out)
            if run.orphans:
                self._flush_orphans(run, now, out)
            if run.stalled:
                self._check_stalled(run, now, None, out, heard_recently=True)
            if len(out) != before:
                self._mark(run)
        return out

    # -- state --
    def take_dirty(self) -> list[tuple[str, str]]:
        """(project, run_id) of the runs whose state changed since the last call."""
        dirty = self._dirty
        self._dirty = []
        for run in dirty:
            run.dirty = False
        return [(run.project, run.run_id) for run in dirty]

    def forget(self, project: str, run_id: str) -> bool:
        """Drop a run's state from memory (a finished run); True if it was there."""
        runs = self._runs.get(project)
        if runs is None or run_id not in runs:
            return False
        run = runs.pop(run_id)
        if not runs:
            del self._runs[project]
        if run.dirty:
            run.dirty = False
            self._dirty.remove(run)
        return True

    def known_runs(self) -> list[tuple[str, str]]:
        return [(run.project, run.run_id) for run in self._all_runs()]

    def state_of(self, project: str, run_id: str) -> dict[str, Any] | None:
        """One run's state as JSON-ready data (layout in the module docstring), or None."""
        runs = self._runs.get(project)
        run = runs.get(run_id) if runs is not None else None
        return _dump_run(run) if run is not None else None

    def load_run_state(self, data: Mapping[str, Any]) -> None:
        """Install a run's state (from :meth:`state_of`), replacing what memory holds of it."""
        run = self._load(data)
        self._runs.setdefault(run.project, {})[run.run_id] = run

    def state(self) -> dict[str, Any]:
        """The state of every run in memory: ``{"v": 1, "runs": [state_of(...), ...]}``."""
        return {"v": STATE_VERSION, "runs": [_dump_run(run) for run in self._all_runs()]}

    @classmethod
    def from_state(
        cls, rules: Iterable[Rule], state: Mapping[str, Any], *, loader: Loader | None = None
    ) -> AlertEvaluator:
        """An evaluator continuing from :meth:`state` (the rules may have changed since)."""
        _check_version(state)
        evaluator = cls(rules, loader=loader)
        runs = state.get("runs", [])
        if not isinstance(runs, list):
            raise AlertStateError("'runs' must be a list of run states")
        for data in runs:
            evaluator.load_run_state(data)
        return evaluator

    def _load(self, data: Mapping[str, Any]) -> _Run:
        try:
            return self._load_unchecked(data)
        except AlertStateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise AlertStateError(f"invalid run state: {type(exc).__name__}: {exc}") from None

    def _load_unchecked(self, data: Mapping[str, Any]) -> _Run:
        _check_version(data)
        run = _Run(str(data["project"]), str(data["run_id"]))
        run.seq = int(data["seq"])
        run.tags = frozenset(data.get("tags", ()))
        run.group = data.get("group")
        step = data.get("step")
        run.step = int(step) if step is not None else None
        run.step_at = _parse_time(data.get("step_at"))
        run.seen_at = _parse_time(data.get("seen_at"))
        run.finished = bool(data.get("finished", False))
        run.crashed_at = _parse_time(data.get("crashed_at"))
        for rule, metrics in data.get("episodes", {}).items():
            for metric, count in metrics.items():
                run.episodes[(rule, metric)] = int(count)
        run.orphans = [Alert.model_validate(alert) for alert in data.get("orphans", ())]
        for item in data.get("tracks", ()):
            name = item["rule"]
            spec = self._by_name.get(name)
            opened = item.get("open")
            alert = Alert.model_validate(opened) if opened is not None else None
            if spec is None or spec.fp != item.get("fp"):
                if alert is not None:  # saved under a rule that is gone or changed
                    run.orphans.append(alert)
                continue
            track = self._track(run, spec, str(item.get("metric", "")))
            track.open = alert
            track.load(item)
        self._refilter(run, None, None)
        return run


def _check_version(data: Mapping[str, Any]) -> None:
    if not isinstance(data, Mapping):
        raise AlertStateError(f"saved state must be a mapping, not {type(data).__name__}")
    version = data.get("v")
    if version != STATE_VERSION:
        raise AlertStateError(
            f"saved alert state has version {version!r}; this runstream reads {STATE_VERSION}"
        )


def _alert_data(alert: Alert) -> dict[str, Any]:
    # Through the alert's own JSON: NaN and infinities become strings, datetimes ISO text.
    data: dict[str, Any] = orjson.loads(alert.to_json())
    return data


def _dump_run(run: _Run) -> dict[str, Any]:
    episodes: dict[str, dict[str, int]] = {}
    for (rule, metric), count in run.episodes.items():
        episodes.setdefault(rule, {})[metric] = count
    tracks = []
    for (rule, metric), track in run.tracks.items():
        item: dict[str, Any] = {
            "rule": rule,
            "fp": track.spec.fp,
            "metric": metric,
            "open": _alert_data(track.open) if track.open is not None else None,
        }
        item.update(track.dump())
        tracks.append(item)
    return {
        "v": STATE_VERSION,
        "project": run.project,
        "run_id": run.run_id,
        "seq": run.seq,
        "tags": sorted(run.tags),  # sorted: a frozenset's order changes between processes
        "group": run.group,
        "step": run.step,
        "step_at": _iso(run.step_at),
        "seen_at": _iso(run.seen_at),
        "finished": run.finished,
        "crashed_at": _iso(run.crashed_at),
        "episodes": episodes,
        "tracks": tracks,
        "orphans": [_alert_data(alert) for alert in run.orphans],
    }


__all__ = [
    "METRIC_KINDS",
    "STATE_VERSION",
    "AlertEvaluator",
    "AlertStateError",
    "Loader",
]
