"""A run's entry in the faust table, split into records that always fit in Kafka.

A run's entry (its state, the summaries of its metrics, its alert evaluator's state) has no
size bound of its own: a run may log 100,000 metric names, define as many, carry a config of
hundreds of KB, and a rule on ``*`` keeps a track per metric. One changelog record per run, as
before, grew past what the broker accepts (about 3,500 metric names were enough) and the worker
crashed with ``MSG_SIZE_TOO_LARGE`` on every restart. Here an entry is stored as records no
larger than :data:`~runstream.schemas.limits.MAX_RECORD_BYTES` each (key and value):

``<run key>``
    The head: ``{"v": 2, "run": state, "alerts": alert state, "chunks": n, "first": chunk 0}``,
    msgpack. Chunk 0 travels in the head, which every batch of the run writes anyway: a run of
    the common size (up to a few hundred metrics) is one record, as before.
``<run key>\\x1es<i>\\x1e`` for i in 1..n-1
    Chunk i of the run's summaries: a msgpack list of summary dicts. A metric stays in the
    chunk it was first put in, and a chunk takes new metrics while the worst case of its
    summaries (every field at its largest) fits in :data:`CHUNK_BYTES`: a chunk can never
    outgrow a record, and a batch rewrites only the chunks of the metrics it touched.
``<run key>\\x1eh<g>.<i>\\x1e``
    Only when the head itself is too large (a big config and a rule on ``*`` over thousands
    of metrics): its msgpack bytes cut into pieces; the head record is then
    ``{"v": 2, "gen": g, "pieces": k}``. The pieces of a new generation are written before the
    head that names them, and those of the previous one are deleted (tombstones) after it: in a
    partition's order, so a restore always finds the pieces its head names.

Keys of chunks and pieces end with ``\\x1e``, which a run key cannot end with (a run id is
``[A-Za-z0-9._:-]+``), so a scan of the table tells heads from the rest by the last byte.
Each record is keyed by what it holds, so compaction keeps the latest of each.

Every summary and the run state carry the ``seq`` of the last event folded into them, so a
worker killed between writing a chunk and its head reads the batch again and folds into each
part exactly what it lacks. (That batch may place a new metric in another chunk than the first
time: a load that finds a metric in two chunks keeps the copy with more points folded in.)
Entries of version 1 (everything in one record) are read as well
and written back in this layout at their next save.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Set
from typing import Any, Protocol

import msgspec

from runstream.errors import RunstreamError
from runstream.processors.aggregates import new_summary
from runstream.schemas.limits import MAX_RECORD_BYTES

Entry = dict[str, Any]


class StoredStateError(RunstreamError):
    """A run's entry in the table cannot be read (a piece or chunk its head names is missing,
    or a record is damaged). Never expected: the order of writes within a partition rules it
    out; a worker that meets one skips the run rather than stop."""


FORMAT = 2

CHUNK_BYTES = MAX_RECORD_BYTES // 8
"""Worst-case msgpack bytes of one chunk of summaries. Well below the record limit: a batch
that touches one metric of a large run rewrites its whole chunk, so smaller chunks write less;
one chunk still holds the summaries of a few hundred metrics (every run of the common size)."""

_CHUNK = "\x1es"
_PIECE = "\x1eh"
_END = "\x1e"
_END_BYTE = ord(_END)

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def _worst_summary_bytes() -> int:
    """msgpack bytes of a summary with empty strings and every other field at its largest."""
    worst = new_summary("", "", "")
    big = -(2**63)
    for field in ("count", "nan_count", "first_step", "last_step", "step_of_min",
                  "step_of_max", "finite_count", "last_seq", "version"):  # fmt: skip
        worst[field] = big
    for field in ("last", "min", "max", "sum", "mean", "value"):
        worst[field] = 0.1  # a float64: 9 bytes, whatever its value
    worst["last_order"] = [big, big]
    worst["summary"] = "mean"  # the longest choice
    # + the longest msgpack string header for each of the three strings, over the 1 byte
    # counted for each empty one.
    return len(_pack(worst)) + 3 * 4


_SUMMARY_BASE = _worst_summary_bytes()


def summary_bound(project: str, run_id: str, name: str) -> int:
    """An upper bound of the msgpack bytes of the summary of ``name`` in this run."""
    return _SUMMARY_BASE + len(project.encode()) + len(run_id.encode()) + len(name.encode())


class Outputs(Protocol):
    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> None: ...


class Layout:
    """Which chunk holds each metric of a run (in memory only: rebuilt on load)."""

    __slots__ = ("chunk_of", "dirty", "gen", "members", "pieces", "room")

    def __init__(self) -> None:
        self.chunk_of: dict[str, int] = {}
        self.members: list[list[str]] = []
        self.room: list[int] = []
        self.dirty: set[int] = set()  # chunks to write at the next save whatever it touched
        self.gen = 0  # generation of the head's pieces (0: none yet)
        self.pieces = 0  # how many pieces that generation has (0: the head is one record)

    def place(self, name: str, bound: int) -> int:
        """The chunk of a metric not placed yet: the last one if it has room, else a new one."""
        if not self.room or self.room[-1] < bound:
            self.members.append([])
            self.room.append(CHUNK_BYTES - 5)  # a msgpack array header
            self.dirty.add(len(self.members) - 1)
        index = len(self.members) - 1
        self.members[index].append(name)
        self.room[index] -= bound
        self.chunk_of[name] = index
        return index


def _unreadable(key: str, exc: Exception) -> StoredStateError:
    return StoredStateError(
        f"the stored entry of run {key!r} cannot be read ({type(exc).__name__}: {exc}); "
        "its events are dead-lettered until the changelog is repaired"
    )


def chunk_key(key: str, index: int) -> bytes:
    return f"{key}{_CHUNK}{index}{_END}".encode()


def piece_key(key: str, gen: int, index: int) -> bytes:
    return f"{key}{_PIECE}{gen}.{index}{_END}".encode()


def is_head(raw_key: bytes) -> bool:
    """Whether a table key is a run's head (not one of its chunks or pieces)."""
    return bool(raw_key) and raw_key[-1] != _END_BYTE


def new_entry(run: dict[str, Any]) -> Entry:
    """The entry of a run seen for the first time."""
    return {"run": run, "summaries": {}, "alerts": None, "layout": Layout()}


class RunStore:
    """The runs' entries in the table's store, written through to its changelog topic."""

    def __init__(
        self, store: MutableMapping[bytes, bytes], changelog: str, outputs: Outputs
    ) -> None:
        self.store = store
        self.changelog = changelog
        self.outputs = outputs

    # -- reading --
    def heads(self) -> Iterator[tuple[str, dict[str, Any] | StoredStateError]]:
        """(run key, head) of every run in the store; a head holds ``run`` and ``alerts``. A
        head that cannot be read comes as the error, so that the others still do."""
        for raw_key, raw in list(self.store.items()):
            if is_head(raw_key):
                key = raw_key.decode()
                try:
                    yield key, self._head(key, raw)
                except StoredStateError as exc:
                    yield key, exc

    def load(self, key: str) -> Entry | None:
        """The whole entry of a run (its summaries read from their chunks), or None."""
        raw = self.store.get(key.encode())
        return None if raw is None else self.assemble(key, self._head(key, raw))

    def assemble(self, key: str, head: dict[str, Any]) -> Entry:
        """The whole entry of a run whose head (from :meth:`heads`) is at hand."""
        run = head["run"]
        layout = Layout()
        layout.gen = head.get("gen", 0)
        layout.pieces = head.get("pieces", 0)
        summaries: dict[str, Any] = {}
        if "summaries" in head:  # version 1: every summary in the head; chunked at next save
            for name, summary in head["summaries"].items():
                summaries[name] = summary
                layout.place(name, summary_bound(run["project"], run["run_id"], name))
        else:
            project, run_id = run["project"], run["run_id"]
            for index in range(head.get("chunks", 0)):
                chunk = head["first"] if index == 0 else self._chunk(key, index)
                layout.members.append([])
                layout.room.append(CHUNK_BYTES - 5)
                for summary in chunk:
                    name = summary["name"]
                    bound = summary_bound(project, run_id, name)
                    other = summaries.get(name)
                    if other is not None:
                        # In two chunks: a worker was killed after writing a new chunk and
                        # before its head, and the batch read again placed the metric in
                        # another. The copy with more points folded in is the latest; the
                        # chunk of the other is rewritten without it at the next save.
                        if other["version"] >= summary["version"]:
                            layout.dirty.add(index)
                            continue
                        stale = layout.chunk_of[name]
                        layout.members[stale].remove(name)
                        layout.room[stale] += bound
                        layout.dirty.add(stale)
                    summaries[name] = summary
                    layout.members[index].append(name)
                    layout.room[index] -= bound
                    layout.chunk_of[name] = index
        return {"run": run, "summaries": summaries, "alerts": head.get("alerts"), "layout": layout}

    def _chunk(self, key: str, index: int) -> list[dict[str, Any]]:
        raw = self.store.get(chunk_key(key, index))
        try:
            if raw is None:
                raise KeyError(f"chunk {index} is missing")
            chunk: list[dict[str, Any]] = _unpack(raw)
            return chunk
        except (KeyError, msgspec.DecodeError) as exc:
            raise _unreadable(key, exc) from None

    def _head(self, key: str, raw: bytes) -> dict[str, Any]:
        try:
            head: dict[str, Any] = _unpack(raw)
            pieces = head.get("pieces", 0)
            if pieces and "run" not in head:
                gen = head["gen"]
                whole = b"".join(self.store[piece_key(key, gen, i)] for i in range(pieces))
                head = {**_unpack(whole), "gen": gen, "pieces": pieces}
            head["run"]["status"]  # the one field every reader needs
        except (KeyError, TypeError, msgspec.DecodeError) as exc:
            raise _unreadable(key, exc) from None
        return head

    # -- writing --
    def save(self, key: str, entry: Entry, partition: int, touched: Set[str]) -> None:
        """Write the chunks of the ``touched`` metrics (and any new or pending chunk), then the
        head. Metrics not placed in a chunk yet are placed now."""
        layout: Layout = entry["layout"]
        summaries = entry["summaries"]
        chunk_of = layout.chunk_of
        dirty = layout.dirty
        run = entry["run"]
        if touched:
            for name in touched - chunk_of.keys():  # set operations in C: the common case
                layout.place(name, summary_bound(run["project"], run["run_id"], name))
            if len(layout.members) > 1:  # chunk 0, the only one of most runs, is in the head
                dirty.update([chunk_of[name] for name in touched])
        if dirty:
            dirty.discard(0)
            for index in sorted(dirty):
                chunk = [summaries[name] for name in layout.members[index]]
                self._put(chunk_key(key, index), _pack(chunk), partition)
            dirty.clear()
        members = layout.members
        head = {
            "v": FORMAT,
            "run": run,
            "alerts": entry["alerts"],
            "chunks": len(members),
            "first": [summaries[name] for name in members[0]] if members else [],
        }
        raw = _pack(head)
        raw_key = key.encode()
        old_gen, old_pieces = layout.gen, layout.pieces
        if len(raw_key) + len(raw) <= MAX_RECORD_BYTES:
            layout.pieces = 0
            self._put(raw_key, raw, partition)
        else:
            self._put_pieces(key, raw, partition, layout)
        for index in range(old_pieces):  # the previous generation, after the head that left it
            self._put(piece_key(key, old_gen, index), None, partition)

    def _put_pieces(self, key: str, raw: bytes, partition: int, layout: Layout) -> None:
        """A head too large for a record: its bytes in pieces of a new generation, then the
        head record that names them."""
        gen = layout.gen + 1
        count = start = 0
        while start < len(raw):
            piece_raw_key = piece_key(key, gen, count)
            end = start + MAX_RECORD_BYTES - len(piece_raw_key)
            self._put(piece_raw_key, raw[start:end], partition)
            start = end
            count += 1
        layout.gen, layout.pieces = gen, count
        self._put(key.encode(), _pack({"v": FORMAT, "gen": gen, "pieces": count}), partition)

    def _put(self, raw_key: bytes, raw: bytes | None, partition: int) -> None:
        if raw is None:
            self.store.pop(raw_key, None)
        else:
            self.store[raw_key] = raw
        self.outputs.send(self.changelog, raw_key, raw, partition)
