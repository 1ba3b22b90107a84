"""Identifiers: time-ordered event ids (UUIDv7) and short run ids."""

from __future__ import annotations

import itertools
import os
import secrets
import string
import time

_RUN_ID_ALPHABET = string.ascii_lowercase + string.digits
_RAND_BITS = 74  # UUIDv7 has 12 + 62 bits after the timestamp, version and variant


class _Counter:
    """Random start, then +1 per id: unique and monotonic within a process, and cheap.

    RFC 9562 section 6.2 method 3 ("monotonic random"). The start is drawn again in a forked
    child, or parent and child would hand out the same ids.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.counter = itertools.count(secrets.randbits(_RAND_BITS - 8))

    def next(self) -> int:
        return next(self.counter) & ((1 << _RAND_BITS) - 1)  # itertools.count is atomic in CPython


_COUNTER = _Counter()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_COUNTER.reseed)


def uuid7(unix_ms: int | None = None) -> str:
    """A new UUIDv7 string, ordered by creation time (ms) and unique within the process."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = _COUNTER.next()
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (rand >> 62) << 64
        | 0b10 << 62
        | (rand & ((1 << 62) - 1))
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_run_id(length: int = 8) -> str:
    """A short random run id like wandb's (``3kq9x0ab``): easy to read, type and grep."""
    return "".join(secrets.choice(_RUN_ID_ALPHABET) for _ in range(length))
