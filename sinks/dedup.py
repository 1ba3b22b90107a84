"""Which events ClickHouse already holds, by run: the highest sequence number stored.

Producers number each run's events 0, 1, 2... and a re-send (a retry, ``runstream sync`` after a
crash) repeats numbers already stored. A run lives on one partition and one sink owns a
partition at a time, so "seq <= highest stored" identifies a re-send exactly, however batches
were cut before and after a crash.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

RunKey = tuple[str, str]  # (project, run_id)


class SeenSequences:
    """An LRU map of run -> highest stored seq, filled from ClickHouse on first sight."""

    def __init__(self, client: Any, database: str, capacity: int = 200_000) -> None:
        self.client = client
        self.database = database
        self.capacity = capacity
        self._high: OrderedDict[RunKey, int] = OrderedDict()

    def load(self, runs: set[RunKey]) -> None:
        unknown = [run for run in runs if run not in self._high]
        for start in range(0, len(unknown), 1000):
            chunk = unknown[start : start + 1000]
            result = self.client.query(
                f"SELECT project, run_id, max(seq) FROM `{self.database}`.events "
                "WHERE (project, run_id) IN {runs:Array(Tuple(String, String))} "
                "GROUP BY project, run_id",
                parameters={"runs": chunk},
            )
            found = {(row[0], row[1]): int(row[2]) for row in result.result_rows}
            for run in chunk:
                self._set(run, found.get(run, -1))

    def get(self, run: RunKey) -> int:
        return self._high.get(run, -1)

    def advance(self, run: RunKey, seq: int) -> None:
        if seq > self._high.get(run, -1):
            self._set(run, seq)

    def _set(self, run: RunKey, seq: int) -> None:
        self._high[run] = seq
        self._high.move_to_end(run)
        while len(self._high) > self.capacity:
            self._high.popitem(last=False)

    def copy(self) -> SeenSequences:
        twin = SeenSequences(self.client, self.database, self.capacity)
        twin._high = OrderedDict(self._high)
        return twin

    def adopt(self, other: SeenSequences) -> None:
        self._high = other._high

    def forget(self, runs: set[RunKey]) -> None:
        """Ask ClickHouse again about these runs on their next sight."""
        for run in runs:
            self._high.pop(run, None)

    def clear(self) -> None:
        """Forget everything (partitions moved: another sink may have written since)."""
        self._high.clear()
