"""Which events ClickHouse already holds, by run: the set of stored sequence numbers.

Producers number each run's events 0, 1, 2... and a re-send (a retry, ``runstream sync`` after a
crash) repeats numbers already stored. A run lives on one partition (its events are keyed by its
run id: the sink refuses others) and one sink owns a partition at a time, so "this (run, seq) is
stored" identifies a re-send exactly, however batches were cut before and after a crash. A seq
below the highest stored that was never stored (a gap filled late: a foreign producer's order,
an event re-sent from a spool after later ones landed) is new and is stored.

The set is kept per run as sorted, disjoint, inclusive intervals ``((lo, hi), ...)``: a run
whose events arrive in order has one interval, and an interval costs the same whatever its
length. The map is an LRU bounded by the number of intervals it holds.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from typing import Any

RunKey = tuple[str, str]  # (project, run_id)
Intervals = tuple[tuple[int, int], ...]
"""Sorted, disjoint, non-adjacent inclusive ranges of seqs."""

_LOAD_CHUNK = 1000


def contains(intervals: Intervals, seq: int) -> bool:
    """Is ``seq`` in one of the ranges?"""
    if not intervals or seq > intervals[-1][1]:
        return False  # the common case: a new event above everything stored
    index = bisect_right(intervals, seq, key=_low) - 1
    return index >= 0 and intervals[index][1] >= seq


def add(intervals: Intervals, seq: int) -> Intervals:
    """The ranges with ``seq`` added (merged with its neighbours)."""
    if not intervals:
        return ((seq, seq),)
    low, high = intervals[-1]
    if seq == high + 1:  # the common case: the next event of the run
        return (*intervals[:-1], (low, seq))
    if seq > high + 1:
        return (*intervals, (seq, seq))
    if low <= seq <= high:
        return intervals
    index = bisect_right(intervals, seq, key=_low)  # intervals[index - 1] starts at or before
    before = intervals[index - 1] if index > 0 else None
    after = intervals[index] if index < len(intervals) else None
    if before is not None and before[1] >= seq:
        return intervals  # already in
    start, end, first, last = seq, seq, index, index
    if before is not None and before[1] == seq - 1:
        start, first = before[0], index - 1
    if after is not None and after[0] == seq + 1:
        end, last = after[1], index + 1
    return (*intervals[:first], (start, end), *intervals[last:])


def _low(interval: tuple[int, int]) -> int:
    return interval[0]


class SeenSequences:
    """An LRU map of run -> stored seqs (as :data:`Intervals`), filled from ClickHouse on first
    sight of a run. ``capacity`` bounds the intervals held over all runs (normally one a run)."""

    def __init__(self, client: Any, database: str, capacity: int = 200_000) -> None:
        self.client = client
        self.database = database
        self.capacity = capacity
        self._runs: OrderedDict[RunKey, Intervals] = OrderedDict()
        self._size = 0  # intervals held

    def load(self, runs: set[RunKey]) -> None:
        """Ask ClickHouse which seqs of the runs not known yet it holds.

        One query per 1,000 runs gives each run's min, max and number of distinct seqs; a run
        whose seqs are not one unbroken range (rare) is asked again for its ranges.
        """
        unknown = [run for run in runs if run not in self._runs]
        for start in range(0, len(unknown), _LOAD_CHUNK):
            chunk = unknown[start : start + _LOAD_CHUNK]
            result = self.client.query(
                f"SELECT project, run_id, min(seq), max(seq), uniqExact(seq) "
                f"FROM `{self.database}`.events "
                "WHERE (project, run_id) IN {runs:Array(Tuple(String, String))} "
                "GROUP BY project, run_id",
                parameters={"runs": chunk},
            )
            found: dict[RunKey, Intervals] = {}
            broken: list[RunKey] = []
            for project, run_id, low, high, count in result.result_rows:
                if int(count) == int(high) - int(low) + 1:
                    found[(project, run_id)] = ((int(low), int(high)),)
                else:
                    broken.append((project, run_id))
            if broken:
                found.update(self._ranges(broken))
            for run in chunk:
                self._set(run, found.get(run, ()))

    def _ranges(self, runs: list[RunKey]) -> dict[RunKey, Intervals]:
        # Gaps and islands: in a run's distinct seqs in order, seq - row_number() is the same
        # within an unbroken range and differs between ranges.
        result = self.client.query(
            "SELECT project, run_id, min(seq) AS low, max(seq) AS high FROM ("
            " SELECT project, run_id, seq, toInt64(seq) - toInt64(row_number() OVER"
            "  (PARTITION BY project, run_id ORDER BY seq)) AS island FROM ("
            "  SELECT DISTINCT project, run_id, seq "
            f"  FROM `{self.database}`.events "
            "   WHERE (project, run_id) IN {runs:Array(Tuple(String, String))}))"
            " GROUP BY project, run_id, island ORDER BY project, run_id, low",
            parameters={"runs": runs},
        )
        ranges: dict[RunKey, list[tuple[int, int]]] = {}
        for project, run_id, low, high in result.result_rows:
            ranges.setdefault((project, run_id), []).append((int(low), int(high)))
        return {run: tuple(found) for run, found in ranges.items()}

    def stored(self, run: RunKey, seq: int) -> bool:
        """Does ClickHouse hold this event (as far as this map knows; load the run first)?"""
        return contains(self._runs.get(run, ()), seq)

    def get(self, run: RunKey) -> int:
        """The highest stored seq of the run, -1 if none."""
        intervals = self._runs.get(run, ())
        return intervals[-1][1] if intervals else -1

    def ranges(self, run: RunKey) -> Intervals:
        return self._runs.get(run, ())

    def advance(self, run: RunKey, seq: int) -> None:
        """Record ``seq`` of the run as stored."""
        intervals = self._runs.get(run, ())
        if not contains(intervals, seq):
            self._set(run, add(intervals, seq))

    def _set(self, run: RunKey, intervals: Intervals) -> None:
        old = self._runs.pop(run, None)
        if old is not None:
            self._size -= len(old)
        self._runs[run] = intervals
        self._size += max(1, len(intervals))  # a run with none stored still takes a place
        while self._size > self.capacity and len(self._runs) > 1:
            _, dropped = self._runs.popitem(last=False)
            self._size -= max(1, len(dropped))

    def copy(self) -> SeenSequences:
        twin = SeenSequences(self.client, self.database, self.capacity)
        twin._runs = OrderedDict(self._runs)  # the intervals are tuples: shared, never changed
        twin._size = self._size
        return twin

    def adopt(self, other: SeenSequences) -> None:
        self._runs, self._size = other._runs, other._size

    def forget(self, runs: set[RunKey]) -> None:
        """Ask ClickHouse again about these runs on their next sight."""
        for run in runs:
            dropped = self._runs.pop(run, None)
            if dropped is not None:
                self._size -= max(1, len(dropped))

    def clear(self) -> None:
        """Forget everything (partitions moved: another sink may have written since)."""
        self._runs.clear()
        self._size = 0
