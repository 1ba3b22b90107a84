"""Histograms as stored data: :class:`Histogram`, and what log() does with the objects it takes
besides numbers (:func:`take_loggables`, in the caller's thread; :func:`histogram_body`, on the
worker).

``run.log({"w": runstream.Histogram(values)}, step=s)`` sends a ``histogram_logged`` event at
step ``s`` next to the step's ``metrics_logged`` (docs/schemas.md); the sink's view
``histograms_mv`` turns it into one row per histogram of the ``histograms`` table (migration
0012). The limits are wandb's (``wandb.Histogram``: 64 bins by default, at most 512); the shim's
``wandb.Histogram`` is a subclass that never raises when built: what this class refuses with
:class:`~runstream.errors.HistogramError` is refused there when logged (counted as ``media``).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from bisect import bisect_right
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runstream.errors import HistogramError
from runstream.producers.inputs import safe_str
from runstream.producers.values import (
    MAX_NAME_LENGTH,
    Loggable,
    is_text,
    media_list,
    repair_text,
)

if TYPE_CHECKING:
    from runstream.producers.run import Run

DEFAULT_BINS = 64
"""Bins when none are given (wandb.Histogram's ``num_bins`` default)."""

MAX_BINS = 512
"""Most bins of one histogram (wandb.Histogram refuses more: ``MAX_LENGTH = 512``)."""

_EXACT_INT = 2**53  # counts up to this are kept as JSON integers, larger ones as floats


class Histogram(Loggable):
    """A histogram to log at a step: ``run.log({"weights": runstream.Histogram(w)}, step=s)``.

    Built from values (``sequence``: a list, tuple, numpy array or torch tensor of any shape,
    flattened) into ``num_bins`` equal bins from the smallest to the largest finite value
    (NaN and infinities are counted out: :attr:`nonfinite` says how many), or given as
    ``np_histogram=(counts, bin_edges)`` as ``numpy.histogram`` returns it. Rules (wandb's):
    1 to 512 bins; edges finite and ascending (each at least the one before, as
    ``numpy.histogram`` checks), one more edge than counts; counts finite and >= 0.

    :attr:`bins` (edges, ``len(counts) + 1`` floats) and :attr:`counts` are lists; the
    object does not change after it is built, so the values may change after log().

    Raises :class:`runstream.errors.HistogramError` (a ``ValueError``) saying what to fix.
    """

    __slots__ = ("bins", "counts", "nonfinite")

    def __init__(
        self,
        sequence: Any = None,
        np_histogram: tuple[Any, Any] | None = None,
        num_bins: int = DEFAULT_BINS,
    ) -> None:
        self.nonfinite = 0
        if np_histogram is not None:
            self.bins, self.counts = _given(np_histogram)
            return
        if sequence is None:
            raise HistogramError(
                "Histogram needs values (Histogram(values)) or np_histogram=(counts, bin_edges)"
            )
        if type(num_bins) is not int or not 1 <= num_bins <= MAX_BINS:
            raise HistogramError(
                f"num_bins must be an int from 1 to {MAX_BINS} (wandb's limit), not "
                f"{safe_str(num_bins)[:40]}"
            )
        values = _values(sequence)
        self.bins, self.counts, self.nonfinite = _binned(values, num_bins)

    @property
    def histogram(self) -> list[float]:
        """The counts, under wandb.Histogram's name for them."""
        return self.counts

    def to_json(self) -> dict[str, Any]:
        """What the event holds: ``{"bins": edges, "counts": counts}``."""
        return {"bins": self.bins, "counts": self.counts}

    def __repr__(self) -> str:
        total = sum(self.counts)
        return f"<Histogram {len(self.counts)} bins, {total:g} values>"


# --- building ----------------------------------------------------------------------------------
def _values(sequence: Any) -> Any:
    """The values as a flat float64 numpy array when numpy is there, else a list of floats."""
    if hasattr(sequence, "detach") and hasattr(sequence, "cpu"):  # a torch tensor
        is_complex = getattr(sequence, "is_complex", None)
        if callable(is_complex) and is_complex():
            raise HistogramError(_COMPLEX)
        try:
            sequence = sequence.detach().reshape(-1).double().cpu()
            sequence = sequence.numpy() if _has_numpy() else sequence.tolist()
        except Exception as exc:
            raise HistogramError(f"the tensor's values cannot be read ({exc})") from None
    try:
        import numpy as np
    except ImportError:  # numpy is not a dependency of the SDK: plain Python then
        return _plain_floats(sequence)
    try:
        given = np.asarray(sequence)
        if np.iscomplexobj(given):  # float64 would drop the imaginary part (ComplexWarning)
            raise HistogramError(_COMPLEX)
        return np.asarray(given, dtype=np.float64).reshape(-1)
    except HistogramError:
        raise
    except Exception as exc:
        raise HistogramError(
            f"Histogram takes numbers (a list, numpy array or torch tensor), not "
            f"{type(sequence).__name__}: {exc}"
        ) from None


_COMPLEX = (
    "Histogram takes real numbers, not complex ones (converting would drop the imaginary "
    "part); log .real, .imag or abs() of the values"
)


def _has_numpy() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _plain_floats(sequence: Any) -> list[float]:
    tolist = getattr(sequence, "tolist", None)
    items = tolist() if callable(tolist) else sequence
    out: list[float] = []

    def walk(item: Any) -> None:
        if isinstance(item, (list, tuple)):
            for inner in item:
                walk(inner)
        else:
            out.append(float(item))

    try:
        walk(list(items) if not isinstance(items, (list, tuple)) else items)
    except Exception as exc:
        raise HistogramError(
            f"Histogram takes numbers, not {type(sequence).__name__}: {exc}"
        ) from None
    return out


def _edges(low: float, high: float, bins: int) -> list[float]:
    """``bins + 1`` ascending edges from ``low`` to ``high``; low*(1-t) + high*t never
    overflows, even from -1e308 to 1e308 (where ``high - low`` is inf)."""
    if low == high:  # numpy.histogram's choice for one distinct value...
        value = low
        low, high = value - 0.5, value + 0.5
        if low == high:  # ...which beyond 2**53 rounds back to the value: the next floats
            low = math.nextafter(value, -math.inf) if value > -sys.float_info.max else value
            high = math.nextafter(value, math.inf) if value < sys.float_info.max else value
    edges = [low * (1 - i / bins) + high * (i / bins) for i in range(bins + 1)]
    edges[0], edges[-1] = low, high
    for i in range(1, len(edges)):  # rounding must never make them descend
        edges[i] = max(edges[i], edges[i - 1])
    return edges


def _binned(values: Any, bins: int) -> tuple[list[float], list[float], int]:
    if isinstance(values, list):
        finite = [v for v in values if math.isfinite(v)]
        nonfinite = len(values) - len(finite)
        counts: list[float] = [0] * bins
        if not finite:
            return _edges(0.0, 1.0, bins), counts, nonfinite
        edges = _edges(min(finite), max(finite), bins)
        for value in finite:  # the last bin holds its right edge, as in numpy.histogram
            counts[min(bisect_right(edges, value) - 1, bins - 1)] += 1
        return edges, counts, nonfinite
    import numpy as np

    mask = np.isfinite(values)
    finite = values[mask]
    nonfinite = int(values.size - finite.size)
    if not finite.size:
        return _edges(0.0, 1.0, bins), [0] * bins, nonfinite
    edges = _edges(float(finite.min()), float(finite.max()), bins)
    index = np.searchsorted(np.asarray(edges), finite, side="right") - 1
    np.clip(index, 0, bins - 1, out=index)
    binned = np.bincount(index, minlength=bins)[:bins]
    return edges, [int(c) for c in binned.tolist()], nonfinite


def _given(np_histogram: Any) -> tuple[list[float], list[float]]:
    """``(counts, bin_edges)`` checked: the rules in :class:`Histogram`'s docstring."""
    try:
        counts_in, edges_in = np_histogram
        counts_list = _as_list(counts_in)
        edges = [float(e) for e in _as_list(edges_in)]
    except Exception as exc:
        raise HistogramError(
            "np_histogram must be (counts, bin_edges), two sequences of numbers as "
            f"numpy.histogram returns them ({type(exc).__name__}: {exc})"
        ) from None
    if not counts_list:
        raise HistogramError(
            "np_histogram has no bins (empty counts): a histogram needs 1 to "
            f"{MAX_BINS} bins; pass numpy.histogram's (counts, bin_edges) of values"
        )
    if len(counts_list) > MAX_BINS:
        raise HistogramError(
            f"a histogram has 1 to {MAX_BINS} bins (wandb's limit), not "
            f"{len(counts_list)}; use fewer bins"
        )
    if len(edges) != len(counts_list) + 1:
        raise HistogramError(
            f"np_histogram has {len(counts_list)} counts and {len(edges)} bin edges: a "
            "histogram needs one more edge than counts"
        )
    if not all(math.isfinite(e) for e in edges):
        raise HistogramError("the bin edges must be finite numbers (no NaN or infinity)")
    if any(b < a for a, b in itertools.pairwise(edges)):
        raise HistogramError("the bin edges must be ascending (each at least the one before)")
    counts: list[float] = []
    for given in counts_list:
        count = given
        if isinstance(count, bool) or not isinstance(count, (int, float)):
            try:
                count = float(count)  # numpy scalars, Fractions...
            except Exception:
                raise HistogramError(
                    f"a count must be a number, not {type(count).__name__}"
                ) from None
        if not math.isfinite(count) or count < 0:
            raise HistogramError(f"counts must be finite and >= 0, not {count!r}")
        exact = float(count).is_integer() and count < _EXACT_INT
        counts.append(int(count) if exact else float(count))
    return edges, counts


def _as_list(values: Any) -> list[Any]:
    tolist = getattr(values, "tolist", None)  # numpy arrays, torch tensors
    if callable(tolist):
        listed = tolist()
        return listed if isinstance(listed, list) else [listed]
    return list(values)


# --- logging -----------------------------------------------------------------------------------
def take_loggables(run: Run, data: dict[Any, Any], step: int) -> dict[Any, Any]:
    """``data`` without its :class:`~runstream.producers.values.Loggable` values: histograms are
    queued as one ``histogram_logged`` event at ``step`` (before the step's metrics); anything
    else (a wandb.Image...) is refused, one warning per name and kind, counted as ``media``.

    Called by log() only when :func:`snapshot_metrics` found such a value. Never raises.
    """
    found: dict[str, Histogram] = {}
    rest = _take(run, data, "", found, 0)
    if found:
        run._submit(
            (run._channel, "histogram_logged", time.time(), histogram_body, step, found, run)
        )
    return rest


def _take(
    run: Run, data: dict[Any, Any], prefix: str, found: dict[str, Histogram], depth: int
) -> dict[Any, Any]:
    rest: dict[Any, Any] = {}
    for key, value in data.items():
        if isinstance(value, Loggable):
            name = f"{prefix}{key if type(key) is str else safe_str(key)}"
            if isinstance(value, Histogram) and getattr(value, "refusal", None) is None:
                found[name] = value
            else:
                _refuse(run, name, value)
        elif media_list(value):  # [wandb.Image, ...]: one refusal per key, as media
            name = f"{prefix}{key if type(key) is str else safe_str(key)}"
            _refuse(run, name, next(v for v in value if isinstance(v, Loggable)), listed=True)
        elif isinstance(value, dict) and depth < 100:
            inner = _take(run, value, f"{prefix}{safe_str(key)}/", found, depth + 1)
            if inner:
                rest[key] = inner
        else:
            rest[key] = value
    return rest


def _refuse(run: Run, name: str, value: Any, listed: bool = False) -> None:
    label = getattr(type(value), "media_label", None) or type(value).__name__
    if listed:
        label = f"a list of {label}"
    reason = getattr(value, "refusal", None)
    shown = repair_text(name[:200]) if not is_text(name) else name[:200]
    if type(reason) is str and reason:  # a wandb.Histogram its arguments could not build
        message = f"{label} at key {shown!r} is refused: {reason}"
    else:
        message = f"{label} at key {shown!r} is not stored by runstream yet; refused"
    run._refusals.note(shown, message, "media", key=label)


def histogram_body(step: int, found: Mapping[str, Histogram], run: Run) -> dict[str, Any] | None:
    """The ``histogram_logged`` body, on the worker; names the schema would refuse are
    refused here (one warning per name), as for metrics."""
    histograms: dict[str, Any] = {}
    for name, histogram in found.items():
        if not 0 < len(name) <= MAX_NAME_LENGTH:
            run._refusals.refuse(
                name[:60], f"a histogram name must have 1 to {MAX_NAME_LENGTH} characters", "metric"
            )
        elif not is_text(name):
            run._refusals.refuse(
                repair_text(name)[:200],
                "the name is not valid Unicode text (it holds a lone surrogate)",
                "metric",
            )
        else:
            histograms[name] = histogram.to_json()
    if not histograms:
        return None
    return {"step": step, "histograms": histograms}
