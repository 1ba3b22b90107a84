"""Dead letters: the one builder of the records the sink and the processors put on ``<prefix>.dlq``.

A dead letter carries the refused message (key and value) and, as headers, where it came from
and why it was refused. It must always fit under
:data:`~runstream.schemas.limits.MAX_RECORD_BYTES`: a message close to the broker's limit (about
1 MB of garbage, say) plus our headers would otherwise be refused by the producer with
``MSG_SIZE_TOO_LARGE``, and a worker that cannot write a dead letter cannot commit past the
message, so it would fail on it forever. :func:`build_dead_letter` cuts what does not fit (the
reason first to a few KB, then the key, then the value) and says so in the headers.

Headers (all values UTF-8 text):

=============================== ==================================================================
``runstream.reason``            why the message was refused (at most 4,000 bytes)
``runstream.consumer``          who refused it: ``sink`` or ``processors``
``runstream.topic``             the topic it was read from
``runstream.partition``         its partition
``runstream.offset``            its offset
``runstream.truncated``         only when something was cut: which parts, e.g. ``value,reason``
``runstream.value_bytes``       only when cut: the original value's size in bytes
``runstream.key_bytes``         only when cut: the original key's size in bytes
``runstream.reason_bytes``      only when cut: the original reason's size in bytes
=============================== ==================================================================

The original message can always be read again from its topic, partition and offset while the
topic keeps it (the events topic keeps everything).
"""

from __future__ import annotations

from dataclasses import dataclass

from runstream.schemas.limits import MAX_RECORD_BYTES

MAX_REASON_BYTES = 4_000
"""A reason longer than this is cut (ClickHouse's messages can quote a whole row)."""

MAX_KEY_BYTES = 1_000
"""A key longer than this is cut (run ids, our keys, are at most 128 characters)."""

# librdkafka counts a header as its name, its value and their two varint lengths (at most 5
# bytes each); a little more per header covers the record's own framing.
_HEADER_OVERHEAD = 16
_RECORD_OVERHEAD = 128

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """What to produce to the dead-letter topic: ``key``, ``value`` and ``headers``."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    truncated: tuple[str, ...] = ()
    """The parts that were cut to fit (``"reason"``, ``"key"``, ``"value"``); empty if none."""

    @property
    def size(self) -> int:
        """Bytes librdkafka counts against ``message.max.bytes``, with a margin for framing."""
        return _record_size(self.key, self.value, self.headers)


def build_dead_letter(
    *,
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
) -> DeadLetterRecord:
    """The dead letter of one refused message, never larger than ``MAX_RECORD_BYTES``.

    ``reason`` is cut to :data:`MAX_REASON_BYTES` (at a character boundary, ending in ``...``),
    ``key`` to :data:`MAX_KEY_BYTES`, and ``value`` to whatever room is left; what was cut and
    the original sizes are recorded in headers. Never raises for any input.
    """
    truncated: list[str] = []
    sizes: Headers = []
    reason_bytes = reason.encode("utf-8", "replace")
    if len(reason_bytes) > MAX_REASON_BYTES:
        truncated.append("reason")
        sizes.append(("runstream.reason_bytes", str(len(reason_bytes)).encode()))
        reason_bytes = _cut_text(reason_bytes, MAX_REASON_BYTES)
    if key is not None and len(key) > MAX_KEY_BYTES:
        truncated.append("key")
        sizes.append(("runstream.key_bytes", str(len(key)).encode()))
        key = key[:MAX_KEY_BYTES]
    headers: Headers = [
        ("runstream.reason", reason_bytes),
        ("runstream.consumer", consumer.encode("utf-8", "replace")),
        ("runstream.topic", topic.encode("utf-8", "replace")),
        ("runstream.partition", str(partition).encode()),
        ("runstream.offset", str(offset).encode()),
    ]
    if value is not None and _record_size(key, value, [*headers, *sizes]) > MAX_RECORD_BYTES:
        truncated.append("value")
        sizes.append(("runstream.value_bytes", str(len(value)).encode()))
    if truncated:
        headers.append(("runstream.truncated", ",".join(truncated).encode()))
        headers += sizes
    if value is not None and "value" in truncated:
        room = MAX_RECORD_BYTES - _record_size(key, b"", headers)
        value = value[: max(0, room)]
    return DeadLetterRecord(key, value, headers, tuple(truncated))


def _record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    size = _RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    return size + sum(len(name) + len(data) + _HEADER_OVERHEAD for name, data in headers)


def _cut_text(text: bytes, limit: int) -> bytes:
    """``text`` (UTF-8) cut to at most ``limit`` bytes at a character boundary, marked ``...``."""
    cut = text[: limit - 3]
    return cut.decode("utf-8", "ignore").encode() + b"..."
