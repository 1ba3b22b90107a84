"""The SDK's write-ahead spool: every event is on local disk before Kafka acknowledges it.

One directory per run, ``<dir>/runs/<run_id>/``:

- ``seg-<first seq>.log``: append-only segments of records ``<len u32><crc32 u32><seq u64><event>``,
  where ``event`` is the encoded event exactly as it is sent to Kafka (same bytes, same event id,
  so a re-send is recognisable downstream);
- ``state.json``: where the run stands (next sequence number, last step, acknowledged through,
  status, owning pid), replaced atomically.

Delivered segments are deleted as acknowledgements arrive; what is left after the process ends
is exactly what ``runstream sync`` still has to deliver.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from runstream.errors import RunstreamError

HEADER = struct.Struct("<IIQ")
SEGMENT_BYTES = 64 * 1024 * 1024
STATE_FILE = "state.json"


class SpoolError(RunstreamError):
    """The spool directory cannot be used (permissions, disk full, corrupt state)."""


@dataclass
class SpoolState:
    run_id: str
    project: str
    topic: str
    kafka_bootstrap: str
    mode: str = "online"
    next_seq: int = 0
    last_step: int = -1
    acked_through: int = -1
    status: str = "running"
    pid: int = 0
    updated: float = 0.0

    @property
    def pending(self) -> int:
        """Events spooled but not acknowledged by Kafka."""
        return self.next_seq - 1 - self.acked_through


def runs_dir(root: Path) -> Path:
    return root / "runs"


class RunSpool:
    """The spool of one run. Only the SDK's worker thread (or ``runstream sync``) touches it."""

    def __init__(self, path: Path, state: SpoolState) -> None:
        self.path = path
        self.state = state
        self._segment: Any = None
        self._segment_size = 0
        self._dirty = True
        self.path.mkdir(parents=True, exist_ok=True)

    # --- opening ------------------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, root: Path, state: SpoolState) -> RunSpool:
        """Open the run's spool, keeping what an earlier process of the same run left."""
        path = runs_dir(root) / state.run_id
        previous = read_state(path)
        if previous is not None:
            state.next_seq = max(state.next_seq, previous.next_seq)
            state.last_step = max(state.last_step, previous.last_step)
            state.acked_through = previous.acked_through
        try:
            spool = cls(path, state)
            spool.save_state()
        except OSError as exc:
            raise SpoolError(
                f"cannot write the spool directory {path}: {exc}. Pass dir= to runstream.init "
                "or set RUNSTREAM_DIR to a writable directory."
            ) from exc
        return spool

    @classmethod
    def open_existing(cls, path: Path) -> RunSpool | None:
        state = read_state(path)
        return None if state is None else cls(path, state)

    # --- writing ------------------------------------------------------------------------------
    def append(self, records: list[tuple[int, bytes]]) -> None:
        """Append encoded events (``(seq, bytes)``, in seq order) with one write call."""
        if not records:
            return
        if self._segment is None or self._segment_size >= SEGMENT_BYTES:
            self._roll(records[0][0])
        pack = HEADER.pack
        crc = zlib.crc32
        chunks = []
        for seq, data in records:
            chunks.append(pack(len(data), crc(data), seq))
            chunks.append(data)
        blob = b"".join(chunks)
        self._segment.write(blob)
        self._segment.flush()  # to the OS: survives the process being killed
        self._segment_size += len(blob)
        self._dirty = True

    def _roll(self, first_seq: int) -> None:
        if self._segment is not None:
            self._segment.close()
        path = self.path / f"seg-{first_seq:020d}.log"
        self._segment = open(path, "ab")  # noqa: SIM115 - kept open across calls on purpose
        self._segment_size = self._segment.tell()

    def close(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None

    # --- state --------------------------------------------------------------------------------
    def mark(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        self._dirty = True

    def save_state(self, force: bool = False) -> None:
        if not (self._dirty or force):
            return
        self.state.updated = time.time()
        tmp = self.path / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_bytes(orjson.dumps(asdict(self.state)))
        os.replace(tmp, self.path / STATE_FILE)
        self._dirty = False

    # --- reading ------------------------------------------------------------------------------
    def segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.path.glob("seg-*.log"):
            with contextlib.suppress(ValueError):
                found.append((int(path.stem[4:]), path))
        return sorted(found)

    def read_from(self, first_seq: int) -> Iterator[tuple[int, bytes]]:
        """Records with seq >= ``first_seq``, in order. A torn record at the end is ignored."""
        segments = self.segments()
        for index, (_, path) in enumerate(segments):
            following = segments[index + 1][0] if index + 1 < len(segments) else None
            if following is not None and following <= first_seq:
                continue
            yield from _read_segment(path, first_seq)

    def undelivered_bytes(self) -> int:
        total = 0
        for _, path in self.segments():
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def prune(self) -> None:
        """Delete segments whose every record was acknowledged."""
        segments = self.segments()
        acked = self.state.acked_through
        for index, (_, path) in enumerate(segments):
            if index + 1 < len(segments):
                done = segments[index + 1][0] - 1 <= acked
            else:
                done = acked >= self.state.next_seq - 1
                if done:
                    self.close()  # the next append starts a fresh segment
            if done:
                path.unlink(missing_ok=True)


def _read_segment(path: Path, first_seq: int) -> Iterator[tuple[int, bytes]]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the generator is done
    except FileNotFoundError:
        return
    with f:
        header_size = HEADER.size
        while True:
            header = f.read(header_size)
            if len(header) < header_size:
                return
            length, crc, seq = HEADER.unpack(header)
            if seq < first_seq:
                f.seek(length, os.SEEK_CUR)
                continue
            data = f.read(length)
            if len(data) < length or zlib.crc32(data) != crc:
                return  # the process died mid-write: the record was never acknowledged either
            yield seq, data


def read_state(path: Path) -> SpoolState | None:
    try:
        raw = orjson.loads((path / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SpoolError(f"the spool state {path / STATE_FILE} is unreadable: {exc}") from exc
    known = SpoolState.__dataclass_fields__
    return SpoolState(**{k: v for k, v in raw.items() if k in known})


def find_runs(root: Path) -> list[Path]:
    """Run directories under a spool root (``<root>/runs/*``) or the root itself if it is one."""
    if (root / STATE_FILE).exists():
        return [root]
    base = runs_dir(root)
    if not base.exists():
        return []
    return sorted(p for p in base.iterdir() if (p / STATE_FILE).exists())
