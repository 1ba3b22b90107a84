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


_ms_prefix = (-1, "")
_rand_prefix = (-1, "")
_LOW48 = (1 << 48) - 1


def uuid7(unix_ms: int | None = None) -> str:
    """A new UUIDv7 string, ordered by creation time (ms) and unique within the process.

    Formatting is most of the cost, so the parts that rarely change (the millisecond, the high
    bits of the counter) are formatted once and reused.
    """
    global _ms_prefix, _rand_prefix
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = _COUNTER.next()
    cached_ms, time_part = _ms_prefix
    if cached_ms != ms:
        h = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
        time_part = f"{h[:8]}-{h[8:]}-7"
        _ms_prefix = (ms, time_part)
    high = rand >> 48  # 26 bits: 12 of rand_a, then 14 of rand_b
    cached_high, rand_part = _rand_prefix
    if cached_high != high:
        rand_part = f"{high >> 14:03x}-{0x8000 | (high & 0x3FFF):04x}-"
        _rand_prefix = (high, rand_part)
    return f"{time_part}{rand_part}{rand & _LOW48:012x}"


def new_run_id(length: int = 8) -> str:
    """A short random run id like wandb's (``3kq9x0ab``): easy to read, type and grep."""
    return "".join(secrets.choice(_RUN_ID_ALPHABET) for _ in range(length))
