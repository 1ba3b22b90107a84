"""Event schema v1 of runstream: the envelope, the typed bodies, the codec and the topics.

Everything that reads or writes events (SDK, sink, processors, producers in other languages via
the exported JSON Schema in ``schemas/json``) goes through this package.
"""

from runstream.schemas.codec import decode, encode, encode_event, event_dict, json_safe_metrics
from runstream.schemas.events import (
    BODIES,
    EVENT_MODELS,
    SCHEMA_VERSION,
    AnyEvent,
    Event,
    EventType,
)
from runstream.schemas.ids import new_run_id, uuid7
from runstream.schemas.topics import Topics, TopicSpec

__all__ = [
    "BODIES",
    "EVENT_MODELS",
    "SCHEMA_VERSION",
    "AnyEvent",
    "Event",
    "EventType",
    "TopicSpec",
    "Topics",
    "decode",
    "encode",
    "encode_event",
    "event_dict",
    "json_safe_metrics",
    "new_run_id",
    "uuid7",
]
