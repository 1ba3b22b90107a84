"""Starting a run: :func:`init`, the run ``mode="disabled"`` returns (:class:`DisabledRun`),
and which ranks of a distributed job log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

from runstream.producers import active
from runstream.producers.ending import FinishResult
from runstream.producers.inputs import config_dict
from runstream.producers.mappings import RunConfig, RunSummary
from runstream.producers.run import Run
from runstream.producers.values import Refusals
from runstream.schemas import new_run_id
from runstream.settings import Mode, Settings

logger = logging.getLogger("runstream")


class DisabledRun(Run):
    """What ``mode="disabled"`` returns: the same surface, doing nothing at all."""

    def __init__(self, settings: Settings, *, id: str | None = None, name: str | None = None,
                 config: Mapping[str, Any] | None = None, **_: Any) -> None:  # fmt: skip
        self.settings = settings
        self.project = settings.project
        self.mode = "disabled"
        self.id = id or settings.run_id or new_run_id()
        self._name = name or self.id
        self.group = self.job_type = self._notes = None
        self._tags: list[str] = []
        self._finished = None
        self._step = 0
        self._refusals = Refusals()
        self._lower = 0
        self._summary_kinds = {}
        self.config = RunConfig(self, config_dict(config, self._refusals))
        self.summary = RunSummary(self)
        self.summary._synced = (0, 0)  # nothing is ever queued: reads never wait

    def log(
        self,
        data: Mapping[str, Any] | None = None,
        step: int | None = None,
        commit: bool = True,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        return None

    def _emit(self, type_name: str, body: dict[str, Any]) -> None:
        return None

    def log_artifact(
        self,
        artifact_or_path: Any,
        name: str | None = None,
        type: str | None = None,
        aliases: list[str] | None = None,
        **_: Any,
    ) -> None:
        return None

    def finish(self, exit_code: int | None = None, status: str | None = None) -> FinishResult:
        if self._finished is None:
            self._finished = FinishResult(0, 0, 0, 0)
            active.unregister(self)
        return self._finished


def init(
    *,
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
    group: str | None = None,
    job_type: str | None = None,
    notes: str | None = None,
    id: str | None = None,
    resume: Literal["allow", "must", "never"] | None = None,
    mode: Mode | None = None,
    dir: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
) -> Run:
    """Start a run. Arguments override ``RUNSTREAM_*`` environment variables and defaults.

    ``mode``: ``online`` (default) delivers to Kafka through the local spool; ``offline`` only
    writes the spool (deliver later with ``runstream sync``); ``disabled`` does nothing.
    ``resume`` with ``id``: ``allow`` continues run ``id`` if it exists, ``must`` requires it,
    ``never`` refuses an existing one. In a ``torch.distributed`` job only rank 0 logs, unless
    ``group`` is given: then every rank logs a run of that group.
    """
    base = settings if settings is not None else Settings.load()
    resolved = base.with_overrides(project=project, mode=mode, dir=dir, resume=resume, run_id=id)
    rank = _distributed_rank()
    if resolved.mode == "disabled" or (rank > 0 and group is None):
        if rank > 0 and resolved.mode != "disabled":
            logger.info(
                "runstream: rank %d does not log (pass group= to log from every rank)", rank
            )
        disabled = DisabledRun(resolved, id=id, name=name, config=config)
        active.track(disabled)
        return disabled
    if rank > 0 and name is None:
        name = f"{group}-rank{rank}"
    return Run(
        resolved,
        name=name,
        config=config,
        tags=tags,
        group=group,
        job_type=job_type,
        notes=notes,
        id=id,
    )


def _distributed_rank() -> int:
    # torchrun and most launchers set RANK; reading it avoids importing torch.
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
