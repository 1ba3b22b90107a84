"""Which runs a read command is about: ``--project``, ``--run`` and ``--where`` as one SQL
condition over the ``project`` and ``run_id`` columns of any runstream table, every value a
bound parameter (the filter through :func:`runstream.read.compile_filter` over ``runs_current``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runstream.read.filters import compile_filter


@dataclass(frozen=True)
class Selection:
    """``condition`` (SQL after ``WHERE``) and its ``parameters``."""

    condition: str
    parameters: dict[str, Any] = field(default_factory=dict)


def select_runs(project: str, runs: Sequence[str] = (), where: str | None = None) -> Selection:
    """The rows of ``project``, of the runs ``runs`` if any, of the runs whose ``runs_current``
    row matches ``where`` if given. Raises :class:`runstream.errors.FilterError` (with its caret)
    for a filter it cannot read, before anything is sent."""
    parts = ["project = {sel_project:String}"]
    params: dict[str, Any] = {"sel_project": project}
    if runs:
        parts.append("run_id IN {sel_runs:Array(String)}")
        params["sel_runs"] = list(runs)
    if where is not None and where.strip():
        sql, filter_params = compile_filter(where, prefix="sel_f")
        parts.append(
            "run_id IN (SELECT run_id FROM runs_current "
            f"WHERE project = {{sel_project:String}} AND ({sql}))"
        )
        params.update(filter_params)
    return Selection(" AND ".join(parts), params)
