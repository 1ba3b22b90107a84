"""Background processes of the local stack: started detached, tracked by pid file, stopped by pid.

The stack's processes outlive the ``runstream dev up`` that started them, so everything later
commands know about them is in ``<home>/run/<name>.pid``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import psutil

from runstream.errors import StackError

# A pid file records the process's start time too: after a reboot (or on a busy machine) the pid
# can belong to an unrelated process, which `down` must never signal.
_START_TIME_TOLERANCE = 1.0

# Popen objects of the processes this process started: kept so that they are reaped (no zombies)
# and so that Python does not warn about children still running when the objects are collected.
_children: dict[int, subprocess.Popen[bytes]] = {}


def process_alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie, exited but not reaped yet, does not count)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # exists, owned by someone else


def _start_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class PidFile:
    """``<pid> <start time> [<address>]`` of one process of the stack."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int | None:
        """The recorded pid while that very process still runs; a stale file is removed."""
        record = self._record()
        return record[0] if record else None

    def address(self) -> str:
        """The address the process was started to serve ('' when not recorded or not running)."""
        record = self._record()
        return record[1] if record else ""

    def _record(self) -> tuple[int, str] | None:
        try:
            fields = self.path.read_text(encoding="utf-8").split()
            pid = int(fields[0])
            started = (float(fields[1]) if len(fields) > 1 else 0.0) or None  # 0: unknown
        except (OSError, ValueError, IndexError):
            return None
        if process_alive(pid):
            actual = _start_time(pid)
            if started is None or actual is None or abs(actual - started) < _START_TIME_TOLERANCE:
                return pid, fields[2] if len(fields) > 2 else ""
        self.clear()
        return None

    def write(self, pid: int, address: str = "") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = _start_time(pid) or 0.0
        self.path.write_text(f"{pid} {started!r} {address}".rstrip() + "\n", encoding="utf-8")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(
    argv: Sequence[str], *, log: Path, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> int:
    """Start ``argv`` in its own session, output appended to ``log``; returns its pid.

    Its own session: Ctrl-C in the terminal of ``runstream dev up`` must not reach the services.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StackError(f"could not start {argv[0]}: {exc}") from exc
    _children[process.pid] = process
    return process.pid


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; True when it has."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pids: Iterable[int], timeout: float) -> None:
    """SIGTERM to all, then SIGKILL to those still running after ``timeout`` seconds."""
    pending = list(pids)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pending:
        if not wait_gone(pid, max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 5.0)


def kill(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL, as a crash would end the process."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, timeout)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def exclusive(path: Path, *, timeout: float, holder: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a file created on demand) for the block.

    Two ``runstream dev`` commands on one home (or two test sessions sharing one jar cache) would
    otherwise start the same service twice or download into the same directory at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"{holder} is busy: another runstream command holds {path} for more "
                        f"than {timeout:.0f}s. Wait for it to finish, then try again."
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing releases the lock
