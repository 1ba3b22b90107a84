"""The one dead-letter builder (schemas/dead_letters.py): whatever the message, its dead letter
fits under MAX_RECORD_BYTES as librdkafka counts it, keeps where it came from and why, and says
what was cut."""

from __future__ import annotations

from confluent_kafka import Producer
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.schemas.dead_letters import MAX_KEY_BYTES, MAX_REASON_BYTES, build_dead_letter
from runstream.schemas.limits import MAX_RECORD_BYTES

# A producer that refuses, at produce() time, any record larger than our limit: librdkafka
# checks key + value + headers against message.max.bytes before sending (nothing listens on
# this address; the records only wait in its queue).
_strict = Producer(
    {
        "bootstrap.servers": "127.0.0.1:9",
        "message.max.bytes": MAX_RECORD_BYTES,
        "socket.connection.setup.timeout.ms": 1000,
        "log_level": 0,
    }
)

sizes = st.one_of(
    st.integers(0, 2_000),
    st.integers(MAX_RECORD_BYTES - 2_000, MAX_RECORD_BYTES + 2_000),
    st.integers(0, 2_000_000),
)


@settings(max_examples=60, deadline=None)
@given(
    key_size=st.one_of(st.none(), sizes),
    value_size=st.one_of(st.none(), sizes),
    reason=st.one_of(st.text(max_size=50), st.integers(0, 20_000).map(lambda n: "é🚀x" * n)),
    topic=st.text(min_size=1, max_size=249),
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
)
def test_a_dead_letter_always_fits_and_keeps_where_and_why(
    *,
    key_size: int | None,
    value_size: int | None,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
) -> None:
    key = None if key_size is None else b"k" * key_size
    value = (
        None
        if value_size is None
        else bytes(range(256)) * (value_size // 256) + b"v" * (value_size % 256)
    )
    letter = build_dead_letter(
        consumer="sink",
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        reason=reason,
    )
    assert letter.size <= MAX_RECORD_BYTES
    _strict.produce("dlq", key=letter.key, value=letter.value, headers=letter.headers)
    headers = dict(letter.headers)
    assert headers["runstream.topic"] == topic.encode("utf-8", "replace")
    assert headers["runstream.partition"] == str(partition).encode()
    assert headers["runstream.offset"] == str(offset).encode()
    assert headers["runstream.consumer"] == b"sink"
    reason_bytes = reason.encode()
    if len(reason_bytes) > MAX_REASON_BYTES:
        assert len(headers["runstream.reason"]) <= MAX_REASON_BYTES
        assert headers["runstream.reason"].endswith(b"...")
        assert reason_bytes.startswith(headers["runstream.reason"][:-3])
        assert headers["runstream.reason_bytes"] == str(len(reason_bytes)).encode()
    else:
        assert headers["runstream.reason"] == reason_bytes
    if key is not None and len(key) > MAX_KEY_BYTES:
        assert letter.key == key[:MAX_KEY_BYTES]
        assert headers["runstream.key_bytes"] == str(len(key)).encode()
    else:
        assert letter.key == key
    if value is not None and letter.value != value:
        assert letter.value is not None and value.startswith(letter.value)
        assert headers["runstream.value_bytes"] == str(len(value)).encode()
        assert "value" in letter.truncated
    cut = headers.get("runstream.truncated", b"").decode()
    assert set(filter(None, cut.split(","))) == set(letter.truncated)


def test_a_message_just_under_the_broker_limit_loses_only_its_tail() -> None:
    garbage = bytes(range(256)) * 4093  # 1,047,808 bytes: the broker takes it, we could not
    letter = build_dead_letter(
        consumer="processors",
        topic="runstream.events",
        partition=2,
        offset=41,
        key=b"run-1",
        value=garbage,
        reason="not valid JSON",
    )
    assert letter.truncated == ("value",)
    assert letter.value is not None and garbage.startswith(letter.value)
    assert MAX_RECORD_BYTES - 1_000 < letter.size <= MAX_RECORD_BYTES
    headers = dict(letter.headers)
    assert headers["runstream.value_bytes"] == b"1047808"
    assert headers["runstream.truncated"] == b"value"
    assert headers["runstream.reason"] == b"not valid JSON"
