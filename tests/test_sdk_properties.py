"""Hypothesis: whatever training code passes to init, log, config and summary (issue 10, proof).

Generated: numbers of every kind and size (huge ints, NaN, +-inf, -0.0, fractions, decimals),
numpy scalars of every numeric dtype, numpy arrays of one element or more, torch-like objects
with ``.item()``, odd strings (lone surrogates, NUL, empty,
over-long), odd keys (ints, None, tuples), nesting, cycles, a huge container, non-mapping data
and any step. Runs are offline and read back from their spool, so this needs no services.

Invariants: ``log()`` never raises and returns quickly; what is stored is the value at the call
(inputs changed afterwards, in place, change nothing); every value an independent oracle says
is storable is in the produced events exactly, once; every refused value was warned about and
counted (``run.refused``); ``run_started`` and ``run_finished`` are always produced and every
produced event decodes with the schema.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runstream
from runstream.schemas.events import parse_metric_value
from tests.test_sdk_local import of_type, offline_settings, spooled

np = pytest.importorskip("numpy")
hnp = pytest.importorskip("hypothesis.extra.numpy")

INT64_MAX = 2**63 - 1
LOG_CALL_LIMIT_SECONDS = 0.5  # generous: the machine is shared; a log() costs microseconds

SETTINGS = settings(
    # Modest by default (the suite runs on every change); set more for a deeper search.
    max_examples=int(os.environ.get("RUNSTREAM_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- what training code passes -------------------------------------------------------------
class TorchLike:
    """What a one-element torch tensor offers: item(), numel(), ndim."""

    def __init__(self, value: Any, raises: bool = False) -> None:
        self.value, self.raises, self.ndim = value, raises, 0

    def item(self) -> Any:
        if self.raises:
            raise RuntimeError("a CUDA error, say")
        return self.value

    def numel(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"TorchLike({self.value!r})"


class BadRepr:
    """An object whose repr() raises (Hypothesis prints it with _repr_pretty_)."""

    def __repr__(self) -> str:
        raise ZeroDivisionError("repr")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text("BadRepr()")


NUMERIC_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "float16", "float32", "float64", "longdouble", "bool", "complex64",
                  "complex128"]  # fmt: skip

odd_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=6)
names = st.one_of(
    st.text(alphabet="abxy/_", min_size=1, max_size=6),
    odd_text,
    st.sampled_from(["", "a/b", "\x00", "\ud800", "n\udcff", "x" * 600, "名前"]),
)
big_ints = st.sampled_from([2**63, 2**64, 2**64 - 1, 2**70, -(2**63) - 1, 10**400, -(10**400)])
plain_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(-0.0),
    st.integers(),
    big_ints,
)
numpy_scalars = st.sampled_from(NUMERIC_DTYPES).flatmap(lambda d: hnp.from_dtype(np.dtype(d)))
torch_likes = st.builds(
    TorchLike, st.one_of(st.floats(), st.integers(), st.text(max_size=3)), st.booleans()
)
small_arrays = hnp.arrays(  # one element (a metric) or not (refused, naming the shape)
    st.sampled_from(["float64", "float32", "int64"]),
    st.sampled_from([(), (1,), (1, 1), (0,), (2,), (2, 3)]),
)
exact_types = st.one_of(
    st.fractions(max_denominator=10**6),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
)
leaves = st.one_of(
    plain_numbers,
    numpy_scalars,
    small_arrays,
    exact_types,
    torch_likes,
    st.booleans(),
    st.none(),
    odd_text,
    st.lists(st.floats(), max_size=3),
)
metric_values = st.recursive(
    leaves, lambda inner: st.dictionaries(names, inner, max_size=4), max_leaves=12
)
keys = st.one_of(names, st.integers(-5, 5), st.none(), st.tuples(st.integers(0, 3)))
HUGE = {f"m/{i}": float(i) for i in range(30_000)}
log_data = st.one_of(
    st.dictionaries(keys, metric_values, max_size=6),
    st.just(HUGE),
    st.lists(st.tuples(names, st.floats()), max_size=2),  # pairs, as dict() takes them
    st.sampled_from([None, "loss", 3, b"x"]),
)
steps = st.one_of(
    st.none(),
    st.none(),
    st.integers(min_value=-3, max_value=50),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, 2**64, True, False, 1.5, 2.0, "7"]),
    hnp.from_dtype(np.dtype("int64"), min_value=0, max_value=60),
    hnp.from_dtype(np.dtype("uint8")),
)


# --- an oracle written apart from the SDK ----------------------------------------------------
def storable_float(value: Any) -> float | None:
    """What a metric value must be stored as, or None if it must be refused."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (np.integer, np.floating)):
        return storable_float(value.item()) if not isinstance(value, np.longdouble) else (
            float(value))  # fmt: skip
    if isinstance(value, TorchLike):
        return None if value.raises else storable_float(value.value)
    if isinstance(value, np.ndarray):
        return storable_float(value.item()) if value.size == 1 else None
    if isinstance(value, (Fraction, Decimal)):
        return float(value)
    return None


def is_name(name: str) -> bool:
    if not 0 < len(name) <= 512:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def expected_points(data: dict[Any, Any], prefix: str = "") -> tuple[dict[str, float], int]:
    """(name -> value, refusals) for one log() call: later duplicates win and count once."""
    out: dict[str, float] = {}
    refused = 0
    for key, value in data.items():
        name = prefix + (key if isinstance(key, str) else str(key))
        if isinstance(value, dict):
            inner, count = expected_points(value, name + "/")
            for k, v in inner.items():
                refused += k in out
                out[k] = v
            refused += count
            continue
        number = storable_float(value)
        if number is None or not is_name(name):
            refused += 1
            continue
        refused += name in out
        out[name] = number
    return out, refused


def expected_step(step: Any) -> int | None:
    if isinstance(step, (bool, np.bool_)):
        return None
    try:
        value = operator.index(step)
    except TypeError:
        return None
    return value if 0 <= value <= INT64_MAX else None


def same_float(stored: Any, expected: float) -> bool:
    got = parse_metric_value(stored)
    if math.isnan(expected):
        return math.isnan(got)
    return got == expected and math.copysign(1, got) == math.copysign(1, expected)


@contextmanager
def warnings_logged() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("runstream")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# --- the properties ------------------------------------------------------------------------------
@SETTINGS
@given(calls=st.lists(st.tuples(log_data, steps), min_size=1, max_size=5))
def test_log_stores_every_storable_point_exactly_and_refuses_the_rest_out_loud(
    tmp_path_factory: pytest.TempPathFactory, calls: list[tuple[Any, Any]]
) -> None:
    settings_ = offline_settings(tmp_path_factory.mktemp("prop"))
    run = runstream.init(settings=settings_)
    expected: list[tuple[int, str, float]] = []
    refused = 0
    next_step = 0
    with warnings_logged() as records:
        for given_data, step in calls:
            started = time.perf_counter()
            run.log(given_data, step=step)
            assert time.perf_counter() - started < LOG_CALL_LIMIT_SECONDS
            try:
                data = dict(given_data)  # log() takes what dict() takes: a mapping, or pairs
            except (TypeError, ValueError):
                refused += 1
                continue
            resolved = next_step if step is None else expected_step(step)
            if resolved is None or resolved > INT64_MAX:  # a step-less call after 2**63-1
                refused += 1
                continue
            points, count = expected_points(data)
            refused += count
            next_step = max(next_step, resolved + 1)
            expected += [(resolved, name, value) for name, value in points.items()]
        result = run.finish()
    assert result.ok
    events = spooled(settings_, run.id)  # each decodes with the schema
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    stored = [
        (e["body"]["step"], name, value)
        for e in of_type(events, "metrics_logged")
        for name, value in e["body"]["metrics"].items()
    ]
    assert len(stored) == len(expected)
    for (step, name, value), (got_step, got_name, got_value) in zip(
        sorted(expected, key=lambda p: (p[0], p[1])),
        sorted(stored, key=lambda p: (p[0], p[1])),
        strict=True,
    ):
        assert (got_step, got_name) == (step, name)
        assert type(got_step) is int
        assert same_float(got_value, value), (name, got_value, value)
    assert run.refused == refused
    assert (refused > 0) == bool(records)


json_exact = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)
odd_config_values = st.one_of(
    big_ints,
    st.sampled_from([math.nan, math.inf, "\ud800", b"bytes", object(), {1, 2}, (1, 2)]),
    numpy_scalars,
    torch_likes,
    st.builds(BadRepr),
)


exact_keys = st.text(alphabet="abc/ é", min_size=1, max_size=6)
odd_keys = st.text(alphabet="XYZ", min_size=1, max_size=3)  # never one of the exact keys


def same_json(got: Any, want: Any) -> bool:
    """Equal and of the same JSON kind all the way down (1.0 is not 1, True is not 1)."""
    if type(got) is not type(want):
        return False
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(same_json(got[k], want[k]) for k in want)
    if isinstance(want, list):
        pairs = zip(got, want, strict=False)
        return len(got) == len(want) and all(same_json(g, w) for g, w in pairs)
    if isinstance(want, float):
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    return bool(got == want)


@SETTINGS
@given(
    exact=st.dictionaries(exact_keys, json_exact, max_size=5),
    odd=st.dictionaries(odd_keys, odd_config_values, max_size=3),
    summary=st.dictionaries(st.text(min_size=1, max_size=6), json_exact, max_size=4),
    cyclic=st.booleans(),
)
def test_init_config_and_summary_store_json_exactly_and_warn_for_the_rest(
    tmp_path_factory: pytest.TempPathFactory,
    exact: dict[str, Any],
    odd: dict[str, Any],
    summary: dict[str, Any],
    cyclic: bool,
) -> None:
    settings_ = offline_settings(tmp_path_factory.mktemp("prop"))
    config: dict[str, Any] = {**exact, **odd}
    if cyclic:
        config["self"] = config
    with warnings_logged() as records:
        run = runstream.init(settings=settings_, config=config, name="p")
        run.config.update(odd)
        run.summary.update(summary)
        run.summary.update(odd)
        result = run.finish()
    assert result.ok
    events = spooled(settings_, run.id)
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    stored = events[0]["body"]["config"]
    for key, value in exact.items():
        assert same_json(stored[key], value), key
    assert set(stored) == set(config)
    summaries = [e["body"]["summary"] for e in of_type(events, "summary_updated")]
    if summary:
        assert all(same_json(summaries[0][k], v) for k, v in summary.items())
        assert summaries[-1].keys() == {**summary, **odd}.keys()  # the final: explicit keys
    if cyclic or any(_needs_warning(v) for v in odd.values()):
        assert run.refused > 0
    if not odd and not cyclic:
        assert run.refused == 0
    assert (run.refused > 0) == bool(records)  # every count was warned about, and only those


def _needs_warning(value: Any) -> bool:
    """Values that cannot be stored as they are, whatever else happens."""
    if isinstance(value, int) and not isinstance(value, bool):
        return not -(2**63) <= value <= 2**64 - 1
    return isinstance(value, (str, bytes, np.complexfloating, BadRepr)) or type(value) is object


# --- values changed after log(): what is stored is what was passed at the call --------------------
mutable_leaves = st.one_of(
    st.floats(allow_nan=False).map(lambda v: ("float", v)),
    st.floats(allow_nan=False).map(lambda v: ("0-d", v)),
    st.floats(allow_nan=False).map(lambda v: ("(1,)", v)),
    st.floats(allow_nan=False).map(lambda v: ("(1,1)", v)),
    st.floats(allow_nan=False, width=32).map(lambda v: ("torch", v)),
)
mutable_trees = st.recursive(
    mutable_leaves,
    lambda inner: st.dictionaries(
        st.text(alphabet="abc", min_size=1, max_size=3), inner, min_size=1, max_size=3
    ),
    max_leaves=8,
)


class MutableTensor(TorchLike):
    """A one-element tensor updated in place (``acc += loss``), as torch allows."""

    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.ndim = 1


def build(tree: Any) -> tuple[Any, list[Any]]:
    """(the value to log, the mutable leaves and dicts inside it)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        handles: list[Any] = [out]
        for key, sub in tree.items():
            out[key], inner = build(sub)
            handles += inner
        return out, handles
    kind, value = tree
    if kind == "float":
        return value, []
    if kind == "torch":
        tensor = MutableTensor(value)
        return tensor, [tensor]
    shape = {"0-d": (), "(1,)": (1,), "(1,1)": (1, 1)}[kind]
    array = np.full(shape, value)
    return array, [array]


def mutate(handles: list[Any]) -> None:
    for handle in handles:
        if isinstance(handle, dict):
            for key in list(handle):
                handle[key + "_later"] = 1.0
                if not isinstance(handle[key], (dict, np.ndarray, MutableTensor)):
                    handle[key] = -12345.0
        elif isinstance(handle, np.ndarray):
            handle[...] = -12345.0
        else:
            handle.value = -12345.0


@SETTINGS
@given(
    calls=st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from("xyz"), mutable_trees, min_size=1, max_size=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_values_changed_after_log_are_stored_as_they_were_at_the_call(
    tmp_path_factory: pytest.TempPathFactory, calls: list[tuple[dict[str, Any], bool]]
) -> None:
    settings_ = offline_settings(tmp_path_factory.mktemp("prop"))
    run = runstream.init(settings=settings_)
    expected: dict[tuple[int, str], float] = {}
    for step, (tree, commit) in enumerate(calls):
        data, handles = build(tree)
        # commit=False, then a commit at the same step: both taken at their call
        run.log(data, step=step, commit=commit)
        points, _ = expected_points(_as_floats(tree))
        expected.update({(step, name): value for name, value in points.items()})
        mutate(handles)
        if not commit:
            run.log({"done": 1.0}, step=step)
            expected[(step, "done")] = 1.0
    run.finish()
    stored = {
        (e["body"]["step"], name): parse_metric_value(value)
        for e in of_type(spooled(settings_, run.id), "metrics_logged")
        for name, value in e["body"]["metrics"].items()
    }
    assert stored == expected
    assert run.refused == 0


def _as_floats(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _as_floats(v) for k, v in tree.items()}
    kind, value = tree
    return float(np.float32(value)) if kind == "torch" else value
