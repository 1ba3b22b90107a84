"""Reading a spool whatever happened to it: torn writes, flipped bytes, lost files.

A record is ``<len u32><crc32 u32><seq u64><event>`` (``producers/spool.py``). It is taken as
intact when its length fits the file and Kafka's limit, its CRC matches the event bytes, its
seq is above the previous record's and equals the ``"seq"`` inside the event (the header's seq
is not covered by the CRC). Anything else is damage: reading reports it (file, byte offset, the
seqs around it) and searches forward for the next intact record, so one damaged record costs
that record, never the ones after it.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from runstream.producers.spool import HEADER, SpoolState
from runstream.schemas.limits import KAFKA_MESSAGE_MAX_BYTES

if TYPE_CHECKING:
    from runstream.producers.spool import RunSpool

_SEQ_WINDOW = 200  # the envelope's seq comes right after its id and type
_MAX_SEQ_JUMP = 1 << 40  # a header seq this far past the previous one is a flipped bit


@dataclass(frozen=True)
class Damage:
    """One damaged place in a run's spool.

    ``file``: the damaged file; ``offset``: byte offset in it (None: the whole file or a seq
    range); ``after_seq``/``before_seq``: the intact records around it (None: none);
    ``what``: what was found and what was done.
    """

    run_id: str
    file: str
    offset: int | None
    what: str
    after_seq: int | None = None
    before_seq: int | None = None

    def __str__(self) -> str:
        where = self.file if self.offset is None else f"{self.file} at byte {self.offset}"
        around = []
        if self.after_seq is not None:
            around.append(f"after seq {self.after_seq}")
        if self.before_seq is not None:
            around.append(f"before seq {self.before_seq}")
        return f"{where}{' (' + ', '.join(around) + ')' if around else ''}: {self.what}"


def scan(spool: RunSpool, first_seq: int, damages: list[Damage]) -> Iterator[tuple[int, bytes]]:
    """Intact records of ``spool`` with seq >= ``first_seq``, in seq order."""
    segments = spool.segments()
    last = -1
    for index, (name_seq, path) in enumerate(segments):
        following = segments[index + 1][0] if index + 1 < len(segments) else None
        if following is not None and following <= first_seq:
            continue
        last = max(last, name_seq - 1)
        for seq, data in _scan_segment(spool.state.run_id, path, last, damages):
            last = seq
            if seq >= first_seq:
                yield seq, data


def _scan_segment(
    run_id: str, path: Path, last: int, damages: list[Damage]
) -> Iterator[tuple[int, bytes]]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # deleted meanwhile: it was acknowledged and pruned
    except OSError as exc:
        damages.append(Damage(run_id, str(path), None, f"unreadable, skipped: {exc}", last))
        return
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return
        try:
            view = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            damages.append(Damage(run_id, str(path), None, f"unreadable, skipped: {exc}", last))
            return
        with view:
            pos = 0
            unpack, crc32, header_size = HEADER.unpack_from, zlib.crc32, HEADER.size
            while pos < size:
                # The intact case inline (what _record_at checks), as replay reads at speed.
                start = pos + header_size
                if start <= size:
                    length, crc, seq = unpack(view, pos)
                    end = start + length
                    if 0 < length <= KAFKA_MESSAGE_MAX_BYTES and end <= size and last < seq:
                        data = view[start:end]
                        if crc32(data) == crc and _inner_seq_agrees(data, seq, last):
                            last = seq
                            pos = end
                            yield seq, data
                            continue
                resume = _resync(view, pos + 1, size, last)
                if resume is None:
                    what = (
                        f"the last {size - pos} bytes are a torn or damaged record (the "
                        "process stopped mid-write, or the file was damaged); skipped"
                    )
                    damages.append(Damage(run_id, str(path), pos, what, last))
                    return
                next_seq = HEADER.unpack_from(view, resume)[2]
                what = f"{resume - pos} damaged bytes skipped; reading went on at byte {resume}"
                damages.append(Damage(run_id, str(path), pos, what, last, next_seq))
                pos = resume
    finally:
        os.close(fd)


def _record_at(view: mmap.mmap, pos: int, size: int, last: int) -> tuple[int, bytes, int] | None:
    """The intact record at ``pos``: (seq, event, end offset), or None."""
    start = pos + HEADER.size
    if start > size:
        return None
    length, crc, seq = HEADER.unpack_from(view, pos)
    end = start + length
    if length == 0 or length > KAFKA_MESSAGE_MAX_BYTES or end > size:
        return None
    if seq <= last:
        return None
    data = view[start:end]
    if zlib.crc32(data) != crc or not _inner_seq_agrees(data, seq, last):
        return None
    return seq, data, end


def _inner_seq_agrees(data: bytes, seq: int, last: int) -> bool:
    """The header's seq is not covered by the CRC: it must be near the previous one and equal
    the event's own ``"seq"`` (events without one, from other encoders, pass)."""
    if seq - last > _MAX_SEQ_JUMP:
        return False
    at = data.find(b'"seq":', 0, _SEQ_WINDOW)
    if at < 0:
        return True
    digits = at + 6
    return data[digits : data.find(b",", digits, digits + 24)] == b"%d" % seq


def _resync(view: mmap.mmap, start: int, size: int, last: int) -> int | None:
    """Offset of the next intact record at or after ``start``. Events are JSON objects, so a
    record starts 16 bytes before a ``{``: only those places are tried."""
    brace = view.find(b"{", start + HEADER.size)
    while brace != -1:
        candidate = brace - HEADER.size
        if _record_at(view, candidate, size, last) is not None:
            return candidate
        brace = view.find(b"{", brace + 1)
    return None


def rebuild_state(path: Path, defaults: SpoolState) -> tuple[SpoolState, list[Damage]]:
    """A run's state rebuilt from its segments, when ``state.json`` is missing or damaged.

    Next seq: one past the highest intact record; last step: the highest step of its
    ``metrics_logged`` events. What was acknowledged is known only up to the first segment left
    (earlier ones were deleted once acknowledged): records of that segment may be sent again,
    and such a re-send is recognised downstream by its run and seq.
    """
    from runstream.producers.spool import RunSpool

    state = SpoolState(**{**defaults.__dict__, "not_spooled": []})
    spool = RunSpool.__new__(RunSpool)
    spool.path, spool.state = path, state
    segments = spool.segments()
    if segments:  # the segments before the first one left were acknowledged and deleted
        state.acked_through = max(state.acked_through, segments[0][0] - 1)
    damages: list[Damage] = []
    for seq, data in scan(spool, 0, damages):
        state.next_seq = max(state.next_seq, seq + 1)
        if b'"type":"metrics_logged"' in data[:_SEQ_WINDOW]:
            try:
                step = orjson.loads(data)["body"]["step"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if isinstance(step, int):
                state.last_step = max(state.last_step, step)
    return state, damages


def first_project(path: Path) -> str | None:
    """The ``project`` of the first intact event in the spool folder ``path`` (whose run it
    holds when its ``state.json`` cannot tell), None when it has none."""
    from runstream.producers.spool import RunSpool

    spool = RunSpool.__new__(RunSpool)
    spool.path = path
    spool.state = SpoolState(run_id=path.name, project="", topic="?", kafka_bootstrap="")
    for _, data in scan(spool, 0, []):
        try:
            project = orjson.loads(data).get("project")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(project, str) and project:
            return project
    return None
