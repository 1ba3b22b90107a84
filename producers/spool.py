"""The SDK's write-ahead spool: every event is on local disk before Kafka acknowledges it.

One directory per run, ``<dir>/runs/<run_id>/``; a run is (project, run id) downstream, so when
that folder belongs to a run of the same id in another project, ``<dir>/runs/<run_id>@<project
slug>-<hash>/`` (:func:`spool_path`; ``state.json`` names the folder's project). It holds:

- ``seg-<first seq>.log``: append-only segments of records ``<len u32><crc32 u32><seq u64><event>``,
  where ``event`` is the encoded event exactly as it is sent to Kafka (same bytes, same event id,
  so a re-send is recognisable downstream);
- ``state.json``: where the run stands (next sequence number, last step, acknowledged through,
  status, owning pid, seqs that could not be written), replaced atomically.

Delivered segments are deleted as acknowledgements arrive; what is left after the process ends
is exactly what ``runstream sync`` still has to deliver. Reading tolerates damage of any kind
(``producers/spool_scan.py``): what cannot be read is reported with its file and byte offset,
and everything else is still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from runstream.errors import RunstreamError

logger = logging.getLogger("runstream")

HEADER = struct.Struct("<IIQ")
SEGMENT_BYTES = 64 * 1024 * 1024
MIN_SEGMENT_BYTES = 64 * 1024
STATE_FILE = "state.json"
MAX_UNSPOOLED_RANGES = 1000


class SpoolError(RunstreamError):
    """The spool directory cannot be used (permissions, disk full, corrupt state)."""


class PartialAppend(OSError):
    """A spool append wrote only the first ``written`` records (the disk filled up)."""

    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.written = written


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
    # The owning process as this host knows it: a pid alone is no proof (PID 1 of a container
    # is alive wherever sync runs; pids are reused), so sync also compares host and start time.
    host: str = ""
    started: float = 0.0  # the owning process's create time (psutil), seconds since the epoch
    updated: float = 0.0
    # [first, last] seq ranges that were never written to the spool (disk full or unwritable):
    # sent from memory only. Lets `runstream sync` name why they are missing.
    not_spooled: list[list[int]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Events spooled but not acknowledged by Kafka."""
        return self.next_seq - 1 - self.acked_through


_INT_FIELDS = ("next_seq", "last_step", "acked_through", "pid")
_STR_FIELDS = ("run_id", "project", "topic", "kafka_bootstrap", "mode", "status", "host")


def parse_state(raw: Any) -> SpoolState:
    """A :class:`SpoolState` from decoded ``state.json`` content.

    Raises :class:`SpoolError` naming the first field that is missing or of the wrong type.
    """
    if not isinstance(raw, dict):
        raise SpoolError(f"expected a JSON object, found {type(raw).__name__}")
    for name in _INT_FIELDS:
        if name in raw and (not isinstance(raw[name], int) or isinstance(raw[name], bool)):
            raise SpoolError(f"field {name!r} is not an integer: {raw[name]!r}")
    for name in _STR_FIELDS:
        if name in raw and not isinstance(raw[name], str):
            raise SpoolError(f"field {name!r} is not a string: {raw[name]!r}")
    for name in ("run_id", "topic"):
        if not raw.get(name):
            raise SpoolError(f"field {name!r} is missing")
    ranges = raw.get("not_spooled", [])
    if not isinstance(ranges, list) or not all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) for v in r) for r in ranges
    ):
        raise SpoolError(f"field 'not_spooled' is not a list of [first, last]: {ranges!r}")
    known = SpoolState.__dataclass_fields__
    values = {k: v for k, v in raw.items() if k in known}
    values.setdefault("project", "")
    values.setdefault("kafka_bootstrap", "")
    for name in ("updated", "started"):
        value = values.get(name, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            values[name] = 0.0
    return SpoolState(**values)


_IDENTITY: tuple[int, str, float] | None = None


def process_identity() -> tuple[int, str, float]:
    """This process as a spool state records its owner: (pid, host name, create time)."""
    global _IDENTITY
    pid = os.getpid()
    if _IDENTITY is None or _IDENTITY[0] != pid:  # a forked child is another process
        _IDENTITY = (pid, socket.gethostname(), _create_time(pid) or 0.0)
    return _IDENTITY


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def owner_alive(state: SpoolState) -> bool:
    """The process that owns ``state`` is alive: on this host, with the recorded pid, and
    started when the recorded one was (a reused pid, or PID 1 of another container, is not it).
    A state without host or start time (an older SDK's) has no provable owner: False."""
    if state.pid <= 0 or not state.host or not state.started:
        return False
    if state.host != socket.gethostname():
        return False
    started = _create_time(state.pid)
    # create_time is derived from the boot time and the process's start in clock ticks: the
    # same process gives the same value, to well within 10 ms.
    return started is not None and abs(started - state.started) < 0.01


def runs_dir(root: Path) -> Path:
    return root / "runs"


def spool_path(root: Path, project: str, run_id: str) -> Path:
    """The spool folder of run ``run_id`` of ``project`` under the spool root ``root``.

    ``runs/<run_id>/`` (the layout before projects were told apart, still the first choice so
    that folders an earlier SDK wrote keep serving their runs), unless it belongs to another
    project: then ``runs/<run_id>@<slug>-<hash>/`` (slug: the project's first 40 characters
    outside ``[A-Za-z0-9._-]`` replaced by ``_``; hash: 12 hex digits of its SHA-256; ``@`` is
    never in a run id). A folder belongs to the project its ``state.json`` names; when the
    state is missing or damaged, to the project of its first intact event; a folder with
    neither (or a state of an SDK that did not record the project) is anyone's.
    Raises :class:`SpoolError` when both folders belong to other projects.
    """
    base = runs_dir(root)
    digest = hashlib.sha256(project.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", project[:40])
    candidates = (base / run_id, base / f"{run_id}@{slug}-{digest}")
    owners = []
    for path in candidates:
        owner = folder_project(path)
        if owner is None or owner == project:
            return path
        owners.append(owner)
    raise SpoolError(
        f"the spool folders {candidates[0]} and {candidates[1]} belong to runs of projects "
        f"{owners[0]!r} and {owners[1]!r}: choose another run id, or another RUNSTREAM_DIR"
    )


def folder_project(path: Path) -> str | None:
    """The project whose run the spool folder ``path`` holds; None when it is nobody's (absent,
    empty) or unknown (a state without project, no intact event)."""
    try:
        state = read_state(path)
    except SpoolError:
        state = None
    if state is not None:
        return state.project or None
    from runstream.producers.spool_scan import first_project

    try:
        return first_project(path)
    except OSError:  # unreadable: its damage is for sync to report
        return None


def _own_folder(root: Path, state: SpoolState) -> tuple[Path, SpoolState | None, SpoolError | None]:
    """The run's spool folder (:func:`spool_path`), with the state an earlier process of the
    run left there (None: a new run) or why that state is unreadable.

    A folder nobody has yet is claimed by creating its state exclusively: of two processes
    starting runs of one id in two projects at the same moment, one gets it and the other
    looks again and takes the next folder.
    """
    for _ in range(3):
        path = spool_path(root, state.project, state.run_id)
        try:
            previous = read_state(path)
        except SpoolError as exc:
            return path, None, exc
        if previous is not None and previous.project not in ("", state.project):
            continue  # claimed by another project's run since spool_path looked: look again
        try:
            if previous is not None or _claim(path, state):
                return path, previous, None
        except OSError as exc:
            raise SpoolError(
                f"cannot write the spool directory {path}: {exc}. Pass dir= to runstream.init "
                "or set RUNSTREAM_DIR to a writable directory."
            ) from exc
    raise SpoolError(
        f"cannot claim a spool folder for run {state.run_id} of project {state.project!r} "
        f"under {runs_dir(root)}: other processes keep taking it; try again"
    )


def _claim(path: Path, state: SpoolState) -> bool:
    """Create ``path/state.json`` holding ``state`` unless it exists (then False): a hard link
    of a whole file, so that no reader ever sees it half written."""
    path.mkdir(parents=True, exist_ok=True)
    target = path / STATE_FILE
    tmp = path / f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}"
    content = _with_crc(asdict(state))
    try:
        tmp.write_bytes(content)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: an exclusive create
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as out:
                out.write(content)
        return True
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def segment_bytes_for(limit_bytes: int) -> int:
    """Segment size for a spool bounded at ``limit_bytes``: small enough that whole acknowledged
    segments are deleted well before the bound is reached (an eighth of it), 64 KiB to 64 MiB."""
    return max(MIN_SEGMENT_BYTES, min(SEGMENT_BYTES, limit_bytes // 8))


class RunSpool:
    """The spool of one run. Only the SDK's worker thread (or ``runstream sync``) touches it.

    ``size`` is the bytes its segments hold on disk, kept up to date by :meth:`append` and
    :meth:`prune` (no ``stat`` per batch): the worker bounds the spool with it.
    """

    def __init__(
        self,
        path: Path,
        state: SpoolState,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        saved: bool = False,
    ) -> None:
        """``saved``: ``state`` is what ``state.json`` holds (written again only on a change)."""
        self.path = path
        self.state = state
        self.segment_bytes = segment_bytes
        self._segment: Any = None
        self._segment_size = 0
        self._dirty = not saved
        self.path.mkdir(parents=True, exist_ok=True)
        self.size = self.undelivered_bytes()

    # --- opening ------------------------------------------------------------------------------
    @classmethod
    def create_or_open(
        cls, root: Path, state: SpoolState, *, segment_bytes: int = SEGMENT_BYTES
    ) -> RunSpool:
        """Open the run's spool, keeping what an earlier process of the same run left.

        A damaged ``state.json`` is not fatal: the run's position is rebuilt from its segments
        with one warning, so the run and what it spooled are kept.
        """
        path, previous, damaged = _own_folder(root, state)
        if damaged is not None:
            from runstream.producers.spool_scan import rebuild_state

            previous, damages = rebuild_state(path, state)
            logger.warning(
                "runstream: run %s: %s; rebuilt from its spool segments (next seq %d, last "
                "step %d)%s",
                state.run_id,
                damaged,
                previous.next_seq,
                previous.last_step,
                "".join(f"; {d}" for d in damages),
            )
        if previous is not None:
            state.next_seq = max(state.next_seq, previous.next_seq)
            state.last_step = max(state.last_step, previous.last_step)
            state.acked_through = previous.acked_through
            state.not_spooled = previous.not_spooled
        try:
            spool = cls(path, state, segment_bytes=segment_bytes)
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
        """Append encoded events (``(seq, bytes)``, in seq order), one write per segment.

        A segment is rolled within a batch: it holds at most ``segment_bytes``, or a single
        record larger than that. When a write fails (disk full, I/O error), it is cut back to
        the last whole record and the records are tried one by one, so that as many whole
        records as fit are written: raises OSError having written none of them, or
        :class:`PartialAppend` naming how many leading records were written.
        """
        count = len(records)
        written = 0
        record_bytes = HEADER.size
        try:
            while written < count:
                first = record_bytes + len(records[written][1])
                if self._segment is None or (
                    self._segment_size and self._segment_size + first > self.segment_bytes
                ):
                    self._roll(records[written][0])
                room = self.segment_bytes - self._segment_size
                end, size = written, 0
                while end < count and (
                    end == written or size + record_bytes + len(records[end][1]) <= room
                ):
                    size += record_bytes + len(records[end][1])
                    end += 1
                group = records[written:end]
                try:
                    self._write(group)
                except OSError:
                    if len(group) == 1:
                        raise
                    for record in group:  # as many whole records as fit
                        self._write([record])
                        written += 1
                    continue
                written = end
        except OSError as exc:
            if written:
                raise PartialAppend(written, exc) from exc
            raise

    def _write(self, records: list[tuple[int, bytes]]) -> None:
        """One write of whole records; raises OSError having written nothing."""
        if self._segment is None:
            self._roll(records[0][0])
        pack = HEADER.pack
        chunks = []
        crc32 = zlib.crc32
        for seq, data in records:
            chunks.append(pack(len(data), crc32(data), seq))
            chunks.append(data)
        blob = memoryview(b"".join(chunks))
        fd = self._segment.fileno()
        start = self._segment_size
        written = 0
        try:
            while written < len(blob):
                written += os.write(fd, blob[written:])
        except OSError:
            self._cut(fd, start)
            raise
        self._segment_size += written
        self.size += written
        self._dirty = True

    def _cut(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError:
            # The torn bytes stay: start a new segment so that no later record follows them
            # in the same file (readers skip the torn tail and report it).
            self.close()

    def _roll(self, first_seq: int) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        path = self.path / f"seg-{first_seq:020d}.log"
        segment = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open across calls
        self._segment = segment
        self._segment_size = segment.tell()

    def close(self) -> None:
        if self._segment is not None:
            with contextlib.suppress(OSError):
                self._segment.close()
            self._segment = None

    def note_not_spooled(self, first: int, last: int) -> None:
        """Record that seqs ``first..last`` were never written here (kept merged, bounded)."""
        ranges = self.state.not_spooled
        if ranges and ranges[-1][1] >= first - 1:
            ranges[-1][1] = max(ranges[-1][1], last)
        elif len(ranges) < MAX_UNSPOOLED_RANGES:
            ranges.append([first, last])
        else:
            ranges[-1][1] = last  # coarser past the bound: still covers every such seq
        self._dirty = True

    # --- state --------------------------------------------------------------------------------
    def mark(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        self._dirty = True

    def save_state(self, force: bool = False) -> None:
        """Replace ``state.json`` atomically. Raises OSError (the old state stays whole)."""
        if not (self._dirty or force):
            return
        self.state.updated = time.time()
        state = self.state
        if state.not_spooled and state.not_spooled[-1][1] <= state.acked_through:
            state.not_spooled = [r for r in state.not_spooled if r[1] > state.acked_through]
        tmp = self.path / f".{STATE_FILE}.{os.getpid()}"
        try:
            tmp.write_bytes(_with_crc(asdict(state)))
            os.replace(tmp, self.path / STATE_FILE)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._dirty = False

    # --- reading ------------------------------------------------------------------------------
    def segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.path.glob("seg-*.log"):
            with contextlib.suppress(ValueError):
                found.append((int(path.stem[4:]), path))
        return sorted(found)

    def read_from(
        self, first_seq: int, damages: list[Any] | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """Records with seq >= ``first_seq``, in order, skipping damaged bytes.

        Each damaged place (torn or corrupt record, unreadable segment) is appended to
        ``damages`` as a :class:`~runstream.producers.spool_scan.Damage`; reading goes on with
        the next intact record.
        """
        from runstream.producers.spool_scan import scan

        return scan(self, first_seq, damages if damages is not None else [])

    def undelivered_bytes(self) -> int:
        total = 0
        for _, path in self.segments():
            with contextlib.suppress(OSError):
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
                try:
                    size = path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    logger.debug("runstream: cannot delete %s: %s", path, exc)
                    continue
                self.size = max(0, self.size - size)


def read_state(path: Path) -> SpoolState | None:
    """The run's state, None if it has none. Raises :class:`SpoolError` if it is damaged."""
    try:
        content = (path / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SpoolError(f"the spool state {path / STATE_FILE} is unreadable: {exc}") from exc
    try:
        return parse_state(_check_crc(orjson.loads(content)))
    except (orjson.JSONDecodeError, SpoolError, TypeError) as exc:
        raise SpoolError(
            f"the spool state {path / STATE_FILE} is damaged ({len(content)} bytes): {exc}"
        ) from exc


def _with_crc(values: dict[str, Any]) -> bytes:
    # A CRC of the state's own JSON: a flipped byte that still parses (a digit of
    # acked_through, say) would otherwise silently skip or resend events.
    values["crc"] = zlib.crc32(orjson.dumps(values, option=orjson.OPT_SORT_KEYS))
    return orjson.dumps(values)


def _check_crc(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return raw
    if "crc" not in raw:
        # Written before states had a CRC: then it has no field we do not know either (a
        # damaged "crc" key would otherwise pass for such a state).
        unknown = set(raw) - set(SpoolState.__dataclass_fields__)
        if unknown:
            raise SpoolError(f"it has no checksum and unknown fields {sorted(unknown)}")
        return raw
    values = dict(raw)
    crc = values.pop("crc")
    if crc != zlib.crc32(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)):
        raise SpoolError("its checksum does not match its content")
    return values


def find_runs(root: Path) -> tuple[list[Path], list[Path]]:
    """Run directories under a spool root (``<root>/runs/*``, or the root itself if it is one),
    and the stray entries found beside them (files where run directories belong).

    A directory under ``runs/`` is a run's when it holds a ``state.json`` or a segment
    (``seg-*.log``), even when its ``state.json`` is missing or damaged: its records are still
    deliverable, and its damage is reported. Any other directory (empty, or someone else's) is
    not a run: it is listed with the strays and never written into.
    """
    if _is_run_dir(root):
        return [root], []
    base = runs_dir(root)
    if not base.is_dir():
        return [], []
    runs: list[Path] = []
    strays: list[Path] = []
    for entry in sorted(base.iterdir()):
        (runs if entry.is_dir() and _is_run_dir(entry) else strays).append(entry)
    return runs, strays


def _is_run_dir(path: Path) -> bool:
    if (path / STATE_FILE).exists():
        return True
    try:
        return any(path.glob("seg-*.log"))
    except OSError:
        return False
