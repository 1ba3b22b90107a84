"""Which run a command names: ``RUN_ID``, ``PROJECT/RUN_ID`` or ``RUN_ID --project PROJECT``.

A run id never holds a ``/`` (the event schema's ``run_id`` pattern, ``[A-Za-z0-9._:-]+``,
docs/events.md) while a project name may: ``PROJECT/RUN_ID`` splits at the last ``/``, so
``team/vision/k3x9`` is run ``k3x9`` of project ``team/vision``. An id alone that is in several
projects is an error naming them (:class:`AmbiguousRunError`), never a silent pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runstream.errors import ReadArgumentError


class AmbiguousRunError(ReadArgumentError):
    """A bare run id found in several projects; ``projects`` lists them (sorted)."""

    def __init__(self, command: str, run_id: str, projects: list[str]) -> None:
        self.projects = projects
        first = projects[0]
        super().__init__(
            f"run id {run_id!r} is in several projects ({', '.join(projects)}): say which, "
            f"as in `runstream {command} {first}/{run_id}` or `runstream {command} {run_id} "
            f"--project {first}`"
        )


@dataclass(frozen=True)
class RunRef:
    """A run as named on the command line: its id, and its project when one was given."""

    run_id: str
    project: str | None = None

    def __str__(self) -> str:
        return self.run_id if self.project is None else f"{self.project}/{self.run_id}"


def parse_run(spec: str, project: str | None) -> RunRef:
    """``RUN_ID`` or ``PROJECT/RUN_ID`` (split at the last ``/``) plus ``--project``. Raises
    :class:`ReadArgumentError` for an empty id or project, or a project given twice."""
    if "/" in spec:
        if project is not None:
            raise ReadArgumentError(
                f"{spec!r} names its project already: give PROJECT/RUN_ID or --project, not both"
            )
        project, _, spec = spec.rpartition("/")
        if not project:
            raise ReadArgumentError("the project before the '/' is empty: write PROJECT/RUN_ID")
    if not spec:
        raise ReadArgumentError("the run id is empty: write RUN_ID or PROJECT/RUN_ID")
    if project is not None and not project:
        raise ReadArgumentError("--project is empty")
    return RunRef(spec, project)


def find_runs(reader: Any, ref: RunRef) -> list[tuple[str, str, int | None]]:
    """``(project, status, exit_code)`` of each run ``ref`` names in ``runs_brief`` (the run
    columns without config and summary, migration 0013): none, one, or one per project when
    ``ref`` has no project. Values are bound parameters."""
    condition = "run_id = {run:String}"
    parameters: dict[str, Any] = {"run": ref.run_id}
    if ref.project is not None:
        condition += " AND project = {project:String}"
        parameters["project"] = ref.project
    rows = reader.query(
        f"SELECT project, status, exit_code FROM runs_brief WHERE {condition} "
        "ORDER BY project LIMIT 20",
        parameters,
    ).rows
    return [(str(p), str(s), None if c is None else int(c)) for p, s, c in rows]


def one_run(reader: Any, ref: RunRef, command: str) -> tuple[str, str, int | None] | None:
    """The one run ``ref`` names (``(project, status, exit_code)``), None when there is none;
    :class:`AmbiguousRunError` when a bare id is in several projects."""
    found = find_runs(reader, ref)
    if len(found) > 1:
        raise AmbiguousRunError(command, ref.run_id, [p for p, _, _ in found])
    return found[0] if found else None
