"""Turning an event's body into numbered, encoded envelopes, on the worker thread.

:class:`EventEncoder` numbers each run's events (``seq``), stamps them, encodes them with the
shared codec (``runstream.schemas.codec``) and splits a body over the event limit
(``MAX_EVENT_BYTES``) into several events. What it encodes goes to the run's
``RunChannel.pending``; the worker (``producers/worker.py``) spools and sends it from there.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from orjson import dumps

from runstream.producers.sizes import fit_body
from runstream.producers.values import to_json
from runstream.schemas.codec import EnvelopeEncoder
from runstream.schemas.ids import uuid7
from runstream.schemas.limits import MAX_EVENT_BYTES

if TYPE_CHECKING:
    from runstream.producers.channel import RunChannel

logger = logging.getLogger("runstream")


class Timestamps:
    """ISO-8601 UTC strings with microseconds, formatting the date part once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, unix: float) -> str:
        second = int(unix)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((unix - second) * 1_000_000):06d}Z"


def producer_info() -> dict[str, Any]:
    """Who produced the events: the envelope's ``producer`` field (sdk, version, host, pid)."""
    import socket

    from runstream._version import __version__

    return {
        "sdk": "runstream-python",
        "version": __version__,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


class EventEncoder:
    """Numbers and encodes the events of every run of the process (one per worker)."""

    def __init__(self) -> None:
        self.timestamps = Timestamps()
        self.producer_info = producer_info()

    def encode(
        self, channel: RunChannel, type_name: str, unix: float, body: dict[str, Any]
    ) -> None:
        """Number and encode one event (or, over the size limit, the several it becomes).

        A body orjson refuses (an integer beyond 64 bits, a string that is not valid UTF-8,
        an unknown type, nesting past 254 levels) is converted value by value
        (:func:`~runstream.producers.values.to_json`), so that only the bad values are
        changed or lost, each warned about and counted, never the event.
        """
        try:
            encoded_body = dumps(body)
        except Exception:
            body = to_json(body, channel.refusals, type_name)
            try:
                encoded_body = dumps(body)
            except Exception as exc:  # to_json makes every value writable; never seen
                channel.refusals.note(type_name, f"run {channel.run_id}: a {type_name} event "
                                      f"cannot be encoded ({exc}); left out", "event")  # fmt: skip
                return
        encoder = channel.encoder
        if encoder is None:
            encoder = channel.encoder = EnvelopeEncoder(
                project=channel.project, run_id=channel.run_id, producer=self.producer_info
            )
        room = MAX_EVENT_BYTES - encoder.overhead
        if len(encoded_body) <= room:
            self._number(channel, encoder, type_name, unix, (body, encoded_body))
            return
        parts = fit_body(type_name, body, room, channel.refusals, channel.run_id)
        if len(parts) > 1:
            logger.info(
                "runstream: run %s: a %s event of %d bytes is over the %d-byte event limit "
                "(MAX_EVENT_BYTES); it is sent as %d events",
                channel.run_id,
                type_name,
                len(encoded_body),
                MAX_EVENT_BYTES,
                len(parts),
            )
        for part_type, part in parts:
            self._number(channel, encoder, part_type, unix, (part, dumps(part)))

    def _number(
        self,
        channel: RunChannel,
        encoder: EnvelopeEncoder,
        type_name: str,
        unix: float,
        encoded: tuple[dict[str, Any], bytes],
    ) -> None:
        body, encoded_body = encoded
        seq = channel.next_seq
        channel.next_seq = seq + 1
        if type_name == "metrics_logged":
            step = body["step"]
            # A lower step is data too; the run's position stays at its highest step.
            channel.last_step = max(channel.last_step, step)
        elif type_name == "histogram_logged":  # a step of histograms only is a step too
            channel.last_step = max(channel.last_step, body["step"])
        data = encoder.encode(
            uuid7(int(unix * 1000)), type_name, seq, self.timestamps.format(unix), encoded_body
        )
        channel.pending.append((seq, data))
