"""wandb's media types on runstream: ``wandb.Histogram`` is stored (a subclass of
:class:`runstream.Histogram` that never raises when built); ``Image``, ``Audio``, ``Video``,
``Table``, ``Html``, ``Object3D``, ``Molecule``, ``Plotly`` and ``Graph`` are not yet.

Each of those is built with whatever arguments wandb takes (any, in fact: building one never
raises, so a wandb script runs on), and when logged it is refused with one warning per key
naming the type (``wandb.Image at key 'samples' is not stored by runstream yet; refused``) and
counted in ``run.refused_by_kind["media"]``. ``wandb.watch`` / ``wandb.unwatch`` are
:meth:`runstream.Run.watch` on the current run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from runstream.producers import active
from runstream.producers.histograms import DEFAULT_BINS
from runstream.producers.histograms import Histogram as _Histogram
from runstream.producers.values import Loggable
from runstream.wandb._norun import no_run

logger = logging.getLogger("runstream")

__all__ = [
    "Audio",
    "Graph",
    "Histogram",
    "Html",
    "Image",
    "Molecule",
    "Object3D",
    "Plotly",
    "Table",
    "Video",
    "unwatch",
    "watch",
]


class Histogram(_Histogram):
    """``wandb.Histogram(sequence=None, np_histogram=None, num_bins=64)``: a
    :class:`runstream.Histogram` that never raises while built; what wandb would refuse (more
    than 512 bins, edges that do not match the counts...) is refused when logged, with one
    warning saying why (``refused_by_kind["media"]``)."""

    __slots__ = ("refusal",)
    media_label = "wandb.Histogram"

    def __init__(
        self, sequence: Any = None, np_histogram: Any = None, num_bins: int = DEFAULT_BINS
    ) -> None:
        self.refusal: str | None = None
        try:
            super().__init__(sequence, np_histogram=np_histogram, num_bins=num_bins)
        except Exception as exc:  # HistogramError, or whatever a foreign sequence raises
            self.refusal = str(exc) or type(exc).__name__
            self.bins, self.counts, self.nonfinite = [], [], 0


class _Media(Loggable):
    """A wandb media object runstream does not store yet: built from anything, refused when
    logged (``producers/histograms.py``, :func:`take_loggables`)."""

    __slots__ = ("__dict__",)
    media_label = "wandb media"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Nothing of the data is kept (an image batch can be large): only what was passed.
        self._arguments = len(args), sorted(kwargs)

    def to_json(self, *_: Any, **__: Any) -> dict[str, Any]:
        return {"_type": self.media_label, "stored": False}

    def __repr__(self) -> str:
        return f"<{self.media_label}: not stored by runstream yet>"


def _media(label: str) -> type[_Media]:
    name = label.rsplit(".", 1)[-1]
    return type(
        name,
        (_Media,),
        {
            "media_label": label,
            "__slots__": (),
            "__doc__": f"``{label}``: built from any arguments, refused when logged (warned once "
            "per key).",
        },
    )


Image = _media("wandb.Image")
Audio = _media("wandb.Audio")
Video = _media("wandb.Video")
Html = _media("wandb.Html")
Object3D = _media("wandb.Object3D")
Molecule = _media("wandb.Molecule")
Plotly = _media("wandb.Plotly")
Graph = _media("wandb.Graph")


class Table(_Media):
    """``wandb.Table(columns=None, data=None, rows=None, dataframe=None, ...)``: keeps its
    columns and rows in memory so that code building it (``add_data``, ``add_column``,
    ``get_column``...) works; refused when logged, like the other media types. No method
    raises."""

    __slots__ = ()
    media_label = "wandb.Table"

    def __init__(
        self,
        columns: Any = None,
        data: Any = None,
        rows: Any = None,
        dataframe: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.columns: list[Any] = []
        self.data: list[list[Any]] = []
        try:
            if dataframe is not None:
                self.columns = [str(c) for c in dataframe.columns]
                self.data = [list(row) for row in dataframe.itertuples(index=False)]
            else:
                given = data if data is not None else rows
                self.data = [list(row) for row in given] if given is not None else []
                if columns is not None:  # one str is one column, not its characters
                    self.columns = [columns] if isinstance(columns, str) else list(columns)
                elif self.data:
                    self.columns = [f"c{i}" for i in range(len(self.data[0]))]
        except Exception as exc:
            logger.debug("runstream.wandb: Table(...) kept no data (%s)", exc)

    def add_data(self, *values: Any) -> None:
        self.data.append(list(values))

    def add_row(self, *values: Any) -> None:
        self.add_data(*values)

    def add_column(self, name: Any, data: Any = None, optional: bool = False) -> None:
        try:
            values = list(data) if data is not None else []
        except Exception:
            values = []
        self.columns.append(name)
        for i, row in enumerate(self.data):
            row.append(values[i] if i < len(values) else None)

    def get_column(self, name: Any, convert_to: Any = None) -> list[Any]:
        try:
            index = self.columns.index(name)
        except ValueError:
            return []
        return [row[index] if index < len(row) else None for row in self.data]

    def get_index(self) -> list[int]:
        return list(range(len(self.data)))

    def add_computed_columns(self, fn: Any) -> None:
        return None

    def cast(self, *_: Any, **__: Any) -> None:
        return None

    def iterrows(self) -> Iterator[tuple[int, list[Any]]]:
        yield from enumerate(self.data)

    def __len__(self) -> int:
        return len(self.data)


def watch(  # noqa: PLR0917 - wandb's signature
    models: Any,
    criterion: Any = None,
    log: str | None = "gradients",
    log_freq: int = 1000,
    idx: int | None = None,
    log_graph: bool = False,
) -> None:
    """``wandb.watch``: :meth:`runstream.Run.watch` on the current run (without one: one
    warning, nothing watched)."""
    current = active.run
    if current is None:
        no_run("watch")  # nothing is watched
        return
    current.watch(models, criterion, log=log, log_freq=log_freq, idx=idx, log_graph=log_graph)


def unwatch(models: Any = None) -> None:
    """``wandb.unwatch``: remove the hooks :func:`watch` added."""
    current = active.run
    if current is None:
        no_run("unwatch")
        return
    current.unwatch(models)
