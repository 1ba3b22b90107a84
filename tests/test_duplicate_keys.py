"""One rule for duplicate keys (issue 10, item 11): an event with a key twice in any JSON object
is refused, naming the key and where, by the sink's check and the processors' decode alike
(both through runstream.schemas), whatever the whitespace, escapes or omitted fields."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstream.errors import EventDecodeError
from runstream.processors.decoding import decode_event
from runstream.schemas import decode
from runstream.sinks.event_lines import event_line
from tests.samples import sample_event

# --- a JSON writer that can say anything a foreign producer can --------------------------------


class Obj(list[tuple[str, Any]]):
    """A JSON object as the pairs to write, in order, duplicates allowed."""


def to_obj(value: Any) -> Any:
    if isinstance(value, dict):
        return Obj((k, to_obj(v)) for k, v in value.items())
    if isinstance(value, list):
        return [to_obj(v) for v in value]
    return value


def write(value: Any, space: str, ascii_keys: bool) -> str:
    if isinstance(value, Obj):
        pairs = [
            f"{json.dumps(k, ensure_ascii=ascii_keys)}{space}:{space}{write(v, space, ascii_keys)}"
            for k, v in value
        ]
        return "{" + space + f"{space},{space}".join(pairs) + space + "}"
    if isinstance(value, list):
        return "[" + ",".join(write(v, space, ascii_keys) for v in value) + "]"
    return json.dumps(value)


def objects(value: Any, path: str = "") -> list[tuple[Obj, str]]:
    """Every object in ``value`` with its dotted path."""
    found: list[tuple[Obj, str]] = []
    if isinstance(value, Obj):
        found.append((value, path))
        for key, item in value:
            found += objects(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += objects(item, f"{path}.{index}" if path else str(index))
    return found


# --- events ------------------------------------------------------------------------------------

names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12
).filter(lambda s: s.strip() != "")
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
metric_values = st.one_of(finite, st.sampled_from(["NaN", "Infinity", "-Infinity"]))
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), finite, names)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)),
    max_leaves=12,
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["metrics_logged", "metrics_logged", "run_started", "summary"]))
    if kind == "metrics_logged":
        event = sample_event("metrics_logged", seq=draw(st.integers(0, 2**40)))
        event["body"] = {
            "step": draw(st.integers(0, 2**40)),
            "metrics": draw(st.dictionaries(names, metric_values, min_size=1, max_size=6)),
        }
    elif kind == "run_started":
        event = sample_event("run_started", seq=0)
        event["body"]["config"] = draw(st.dictionaries(names, json_values, max_size=5))
    else:
        event = sample_event("summary_updated", seq=3)
        event["body"]["summary"] = draw(st.dictionaries(names, json_values, max_size=5))
    producer = event["producer"] = copy.deepcopy(event["producer"])
    for optional in ("host", "pid"):  # omitted fields must not cancel a duplicate out
        if draw(st.booleans()):
            del producer[optional]
    return event


@st.composite
def wire(draw: st.DrawFn) -> tuple[bytes, tuple[str, str] | None]:
    """An event's bytes, and the (key, where) it has twice, or None."""
    tree = to_obj(draw(events()))
    duplicate = None
    if draw(st.booleans()):
        candidates = [(obj, path) for obj, path in objects(tree) if obj]
        obj, path = draw(st.sampled_from(candidates))
        key, value = draw(st.sampled_from(list(obj)))
        if isinstance(value, float) and draw(st.booleans()):
            value = draw(finite)  # the other value differs: which one wins would matter
        obj.insert(draw(st.integers(0, len(obj))), (key, value))
        duplicate = (key, path)
    space = draw(st.sampled_from(["", " ", "\n", " \t "]))
    return write(tree, space, draw(st.booleans())).encode(), duplicate


def verdict(check: Any, raw: bytes) -> tuple[str, str] | None:
    """(key, where) of the duplicate a reader refuses the event for; None if it takes it."""
    try:
        check(raw)
    except EventDecodeError as exc:
        text = str(exc)
        assert text.startswith("duplicate key "), text
        key = eval(text.removeprefix("duplicate key ").split(" in ")[0])  # the repr of the key
        return key, exc.field
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire())
def test_sink_and_processors_refuse_exactly_the_events_with_a_duplicate_key(
    case: tuple[bytes, tuple[str, str] | None],
) -> None:
    raw, duplicate = case
    assert verdict(lambda r: event_line(r, 0, 0), raw) == duplicate  # the sink
    assert verdict(decode_event, raw) == duplicate  # the processors
    assert verdict(decode, raw) == duplicate  # the schema itself


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (  # the issue's example: stored as two points before
            b'"metrics":{"x":1.0,"x":2.0}',
            "duplicate key 'x' in body.metrics",
        ),
        (b'"metrics":{"x":1.0, "x" :1.0}', "duplicate key 'x' in body.metrics"),
        (b'"metrics":{"x":1.0,"\\u0078":1.0}', "duplicate key 'x' in body.metrics"),
        (b'"metrics":{"x":"NaN","x":1.0}', "duplicate key 'x' in body.metrics"),
    ],
)
def test_the_issue_example_is_refused_with_the_key_and_where(raw: bytes, reason: str) -> None:
    event = sample_event("metrics_logged", seq=1)
    event["body"] = {"step": 1, "metrics": {}}
    line = orjson.dumps(event).replace(b'"metrics":{}', raw)
    for check in (lambda r: event_line(r, 0, 0), decode_event, decode):
        with pytest.raises(EventDecodeError) as refused:
            check(line)
        assert str(refused.value) == reason
        assert refused.value.field == "body.metrics"


def test_a_duplicate_hidden_by_an_omitted_optional_field_is_found() -> None:
    """Producer without host: one key fewer than with it. A duplicated key elsewhere brings the
    count back to what a full producer would give; the check must still see it."""
    event = sample_event("metrics_logged", seq=1)
    event["producer"] = {"sdk": "x", "version": "1", "pid": 1}
    event["body"] = {"step": 1, "metrics": {"a": 1.0}}
    raw = orjson.dumps(event).replace(b'"step":1', b'"step":1,"step":1')
    with pytest.raises(EventDecodeError, match="duplicate key 'step' in body"):
        event_line(raw, 0, 0)
    with pytest.raises(EventDecodeError, match="duplicate key 'step' in body"):
        decode_event(raw)


def test_an_sdk_event_takes_the_quick_path_without_the_exact_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hot path stays cheap: an SDK's event never reaches json.loads."""
    from runstream.schemas import codec

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the exact check ran")

    monkeypatch.setattr(codec.json, "loads", fail)
    for name in ("metrics_logged", "run_started", "system_metrics", "run_finished"):
        raw = orjson.dumps(sample_event(name, seq=1))
        event_line(raw, 0, 0)
        decode_event(raw)
