"""Size limits every record we produce must respect: the one place they are written down.

Kafka refuses a record batch larger than the broker's ``message.max.bytes`` (1,048,588 bytes by
default, Kafka's broker configuration reference) and librdkafka refuses, before sending, a
message larger than the producer's ``message.max.bytes`` (1,000,000 bytes by default,
librdkafka's CONFIGURATION.md). Key, value and headers all count. We keep every record under
:data:`MAX_RECORD_BYTES`, a margin below both, so that no input can make a producer of ours
(the SDK, the sink's dead letters, the processors' changelogs and derived topics, the notifier)
fail with ``MSG_SIZE_TOO_LARGE``.
"""

from __future__ import annotations

KAFKA_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default producer ``message.max.bytes``: the smaller of the two limits."""

MAX_RECORD_BYTES = 900_000
"""Key + value + headers of any record runstream produces, in bytes (a 10% margin for the
record batch overhead and for brokers that were configured a little lower)."""

MAX_EVENT_BYTES = 900_000
"""An encoded event (envelope and body), in bytes: what the SDK may put on the events topic."""
