"""Run wandb training scripts on runstream unchanged: ``import runstream.wandb as wandb``.

Covered (same names, same arguments): ``wandb.init`` (project, name, config (dict or
argparse.Namespace), tags, group, job_type, notes, id, resume, mode, dir, settings; entity,
reinit and other arguments are accepted and ignored), ``wandb.log`` (step, commit),
``wandb.finish``, ``wandb.config`` (item and attribute access, ``update``), ``wandb.summary``,
``wandb.run`` (``id``, ``name``, ``project``, ``config``, ``summary``, ``tags``, ``log``,
``finish``, ``alert``, ``define_metric``, ``log_artifact(path, name, type)``),
``wandb.define_metric`` (``summary`` min/max/mean/last, ``goal`` with ``summary="best"``),
``wandb.alert`` with ``wandb.AlertLevel``, ``wandb.Settings(mode=...)``, ``wandb.login`` and
``wandb.watch`` (no-ops). Media types (``wandb.Image``, tables, histograms) are not covered:
logging them is refused with a warning, never an exception.
"""

from __future__ import annotations

import enum
import logging
from argparse import Namespace
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from runstream.producers import active
from runstream.producers.ending import FinishResult
from runstream.producers.run import Run
from runstream.producers.start import init as _init
from runstream.wandb.artifacts import Artifact as Artifact
from runstream.wandb.artifacts import log_artifact as log_artifact
from runstream.wandb.artifacts import log_code as log_code
from runstream.wandb.artifacts import save as save
from runstream.wandb.artifacts import use_artifact as use_artifact
from runstream.wandb.media import Audio as Audio
from runstream.wandb.media import Graph as Graph
from runstream.wandb.media import Histogram as Histogram
from runstream.wandb.media import Html as Html
from runstream.wandb.media import Image as Image
from runstream.wandb.media import Molecule as Molecule
from runstream.wandb.media import Object3D as Object3D
from runstream.wandb.media import Plotly as Plotly
from runstream.wandb.media import Table as Table
from runstream.wandb.media import Video as Video
from runstream.wandb.media import unwatch as unwatch
from runstream.wandb.media import watch as watch

logger = logging.getLogger("runstream")

_RESUME = {True: "allow", "auto": "allow", "allow": "allow", "must": "must", "never": "never"}
_MODES = {"online": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}


class AlertLevel(str, enum.Enum):
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


class Settings:
    """``wandb.Settings``: ``mode`` is honoured; other fields are kept and ignored."""

    def __init__(self, mode: str | None = None, **other: Any) -> None:
        self.mode = mode
        self.other = other


def init(  # noqa: PLR0917 - positional like wandb.init, for scripts that call it so
    project: str | None = None,
    entity: str | None = None,
    config: Mapping[str, Any] | Namespace | None = None,
    name: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    group: str | None = None,
    job_type: str | None = None,
    notes: str | None = None,
    id: str | None = None,
    resume: bool | str | None = None,
    mode: str | None = None,
    dir: str | None = None,
    settings: Settings | dict[str, Any] | None = None,
    **ignored: Any,
) -> Run:
    """``wandb.init`` on runstream. Returns a :class:`runstream.Run`."""
    if ignored or entity:
        logger.debug(
            "runstream.wandb: ignoring %s", sorted([*ignored, *(["entity"] if entity else [])])
        )
    if isinstance(settings, dict):
        settings = Settings(**settings)
    if mode is None and settings is not None:
        mode = settings.mode
    resolved_mode = _MODES.get(mode) if mode else None
    if mode and resolved_mode is None:
        logger.warning("runstream.wandb: unknown mode %r, using online", mode)
    if isinstance(config, Namespace):
        config = vars(config)
    resume_mode = _RESUME.get(resume) if resume not in (None, False) else None
    return _init(
        project=project,
        name=name,
        config=config,
        tags=list(tags) if tags else None,
        group=group,
        job_type=job_type,
        notes=notes,
        id=id,
        resume=resume_mode,  # type: ignore[arg-type]
        mode=resolved_mode,  # type: ignore[arg-type]
        dir=dir,
    )


def log(
    data: Mapping[str, Any] | None = None,
    step: int | None = None,
    commit: bool | None = None,
    *args: Any,
    **kwargs: Any,
) -> None:
    """``wandb.log``: as :func:`runstream.log` (``sync=`` and unknown keywords are taken by
    :meth:`Run.log`, with one warning each for the unknown ones). Never raises."""
    import runstream

    runstream.log(data, step, True if commit is None else commit, *args, **kwargs)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> FinishResult | None:
    if active.run is None:
        return None  # wandb.finish() with no run is a no-op in wandb too
    import runstream

    return runstream.finish(exit_code=exit_code or 0)


def define_metric(
    name: str,
    step_metric: str | None = None,
    summary: str | None = None,
    goal: str | None = None,
    **ignored: Any,
) -> None:
    current = active.run
    if current is None:
        return
    if summary == "best":
        summary = {"minimize": "min", "maximize": "max"}.get(goal or "", "last")
    if summary in ("min", "max", "mean", "last"):
        current.define_metric(name, summary=summary)  # type: ignore[arg-type]


def alert(
    title: str, text: str = "", level: AlertLevel | str = AlertLevel.INFO, **ignored: Any
) -> None:
    current = active.run
    if current is not None:
        current.alert(title, text, level=level)


def login(*_: Any, **__: Any) -> bool:
    """Nothing to log in to: runstream talks to your own Kafka."""
    return True


class _CurrentMapping(MutableMapping[str, Any]):
    """``wandb.config`` / ``wandb.summary``: the current run's, or a scratch dict before init."""

    def __init__(self, attribute: str) -> None:
        object.__setattr__(self, "_attribute", attribute)
        object.__setattr__(self, "_scratch", {})

    def _target(self) -> MutableMapping[str, Any]:
        current = active.run
        return getattr(current, self._attribute) if current is not None else self._scratch  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        return self._target()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._target()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._target()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._target())

    def __len__(self) -> int:
        return len(self._target())

    def update(self, *args: Any, **kwargs: Any) -> None:
        if args and isinstance(args[0], Namespace):
            args = (vars(args[0]), *args[1:])
        self._target().update(*args, **kwargs)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._target()[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self._target()[key] = value

    def __repr__(self) -> str:
        return repr(dict(self._target()))


config = _CurrentMapping("config")
summary = _CurrentMapping("summary")


def __getattr__(name: str) -> Any:
    if name == "run":
        return active.run
    raise AttributeError(
        f"runstream.wandb does not cover wandb.{name}; see the module docstring for what it covers"
    )
