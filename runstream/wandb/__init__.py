"""Run wandb code on runstream unchanged: ``import runstream.wandb as wandb`` in your own
scripts, or ``runstream.wandb.install()`` so that ``import wandb`` anywhere in the process (the
Hugging Face ``WandbCallback``, accelerate's wandb tracker) resolves to this module.

What is covered, argument by argument, with the environment variables read and the differences
that remain, is docs/wandb.md; the semantics follow wandb 0.31's documentation. Names this module
does not cover raise ``AttributeError`` saying so.
"""

from __future__ import annotations

import enum
import logging
import os
from argparse import Namespace
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from runstream._version import __version__ as _runstream_version
from runstream.producers.ending import FinishResult as _FinishResult
from runstream.producers.mappings import RunConfig as _RunConfig
from runstream.producers.mappings import read_config as _read_config
from runstream.producers.metric_defs import warn_once as _warn_once
from runstream.producers.run import Run as Run
from runstream.producers.start import init as _init
from runstream.producers.values import Refusals as _Refusals
from runstream.settings import Settings as _RunstreamSettings
from runstream.wandb import _modules
from runstream.wandb._install import install, installed, uninstall
from runstream.wandb._modules import Error as Error
from runstream.wandb._modules import apis, env, errors, sdk, util, wandb_run
from runstream.wandb._norun import no_run as _no_run
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
from runstream.wandb.public import Api as Api

logger = logging.getLogger("runstream")

__version__ = f"0.31.0+runstream.{_runstream_version}"
"""A wandb-like version: 0.31.0, the wandb release whose documented behaviour the shim follows,
with runstream's version as the local part (PEP 440), so that version checks of libraries
(``>= 0.12``) pass and anyone printing it sees it is runstream."""

_RESUME = {True: "allow", "auto": "allow", "allow": "allow", "must": "must", "never": "never"}
_MODES = {"online": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled",
          "run": "online"}  # fmt: skip
_REINIT = {None: "default", False: "return_previous", True: "finish_previous",
           "default": "default", "return_previous": "return_previous",
           "finish_previous": "finish_previous", "create_new": "create_new"}  # fmt: skip
_TRUE = ("1", "true", "yes", "on")

_run: Run | None = None
"""What ``wandb.run`` is: the run the last ``init()`` made current, until it finishes."""
_created: list[Run] = []
"""Every run this module started and has not seen finish (``finish_previous`` ends them)."""


class AlertLevel(str, enum.Enum):
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


class Settings:
    """``wandb.Settings``: ``mode``, ``project``, ``run_name``, ``run_id``, ``run_notes``,
    ``run_tags``, ``run_group``, ``run_job_type``, ``root_dir`` and ``reinit`` are honoured
    (``init()``'s own arguments win over them); other fields are kept and ignored."""

    def __init__(self, mode: str | None = None, **other: Any) -> None:
        self.mode = mode
        self.other = other
        for key, value in other.items():
            setattr(self, key, value)

    def get(self, key: str) -> Any:
        return self.mode if key == "mode" else self.other.get(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            if key == "mode":
                self.mode = value
            else:
                self.other[key] = value
                setattr(self, key, value)


_modules.sdk_wandb_settings.Settings = Settings  # type: ignore[attr-defined]


# --- init, log, finish --------------------------------------------------------------------------
def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def init(  # noqa: PLR0917 - positional like wandb.init, for scripts that call it so
    project: str | None = None,
    entity: str | None = None,
    config: Mapping[str, Any] | Namespace | None = None,
    name: str | None = None,
    tags: list[str] | tuple[str, ...] | str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    notes: str | None = None,
    id: str | None = None,
    resume: bool | str | None = None,
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    settings: Settings | dict[str, Any] | _RunstreamSettings | None = None,
    reinit: bool | str | None = None,
    config_exclude_keys: list[str] | str | None = None,
    config_include_keys: list[str] | str | None = None,
    **ignored: Any,
) -> Run:
    """``wandb.init`` on runstream (wandb 0.31): returns a :class:`runstream.Run`.

    Each argument, else the ``wandb.Settings`` field, else the environment variable
    (``WANDB_PROJECT``, ``WANDB_NAME``, ``WANDB_RUN_ID``, ``WANDB_MODE``, ``WANDB_DIR``,
    ``WANDB_TAGS`` (comma-separated), ``WANDB_NOTES``, ``WANDB_RUN_GROUP``, ``WANDB_JOB_TYPE``,
    ``WANDB_RESUME``; ``WANDB_DISABLED=true`` is ``mode="disabled"``), else runstream's default.
    ``resume`` ``True``/``"auto"``/``"allow"`` continues run ``id`` if it exists; without an id
    a new run starts. ``mode="disabled"`` returns a run that does nothing and makes it
    ``wandb.run``. ``reinit`` with a run open: ``"default"``/``False``/``"return_previous"``
    return it, ``True``/``"finish_previous"`` finish it first, ``"create_new"`` starts another
    and leaves ``wandb.run`` as it was. A runstream :class:`~runstream.Settings` may be passed
    as ``settings=`` (where to deliver). ``dir`` (``WANDB_DIR``) holds the SDK's directory,
    ``<dir>/runstream``, as wandb's holds ``<dir>/wandb``. ``entity`` and other wandb arguments
    are ignored. Where wandb takes a list (``tags``, ``Settings(run_tags=)``,
    ``config_include_keys``, ``config_exclude_keys``), a lone ``str`` is one element.
    """
    global _run
    if ignored or entity:
        logger.debug(
            "runstream.wandb: ignoring %s", sorted([*ignored, *(["entity"] if entity else [])])
        )
    base: _RunstreamSettings | None = None
    if isinstance(settings, _RunstreamSettings):
        base, settings = settings, None
    elif isinstance(settings, dict):
        settings = Settings(**settings)
    fields = settings.other if settings is not None else {}
    if mode is None and settings is not None:
        mode = settings.mode
    if mode is None:
        mode = _env("WANDB_MODE")
        if mode is None and (os.environ.get("WANDB_DISABLED") or "").lower() in _TRUE:
            mode = "disabled"
    resolved_mode = _MODES.get(mode.lower()) if isinstance(mode, str) else None
    if mode is not None and resolved_mode is None:
        _warn_once(f"mode {mode!r}", "runstream.wandb: unknown mode %r, using online", mode)

    if reinit is None:
        reinit = fields.get("reinit")
    policy = _REINIT.get(reinit) if isinstance(reinit, (bool, str, type(None))) else None
    if policy is None:
        _warn_once(f"reinit {reinit!r}", "runstream.wandb: unknown reinit %r, using 'default'",
                  reinit)  # fmt: skip
        policy = "default"
    current = _current()
    returning = policy in ("default", "return_previous") and resolved_mode != "disabled"
    if current is not None and returning:
        logger.info("runstream.wandb: init() with run %s open returns it (reinit=%r: wandb "
                    "0.31 does the same)", current.id, reinit)  # fmt: skip
        return current
    if policy == "finish_previous":
        for previous in list(_created):
            if not previous.finished:
                previous.finish()
        _created.clear()
        _run = None

    project = project or fields.get("project") or _env("WANDB_PROJECT")
    name = name or fields.get("run_name") or _env("WANDB_NAME")
    id = id or fields.get("run_id") or _env("WANDB_RUN_ID")
    notes = notes if notes is not None else fields.get("run_notes") or _env("WANDB_NOTES")
    group = group or fields.get("run_group") or _env("WANDB_RUN_GROUP")
    job_type = job_type or fields.get("run_job_type") or _env("WANDB_JOB_TYPE")
    dir = dir or fields.get("root_dir") or _env("WANDB_DIR")
    # wandb keeps its files in <dir>/wandb; runstream its spool in <dir>/.runstream (Lightning
    # passes dir="." by default: the spool must not spread over the working directory).
    local_dir = os.path.join(os.fspath(dir), ".runstream") if dir else None
    if tags is None:
        tags = fields.get("run_tags")
        if tags is None and _env("WANDB_TAGS"):
            tags = [t.strip() for t in os.environ["WANDB_TAGS"].split(",") if t.strip()]
    config_include_keys = _as_list(config_include_keys)
    config_exclude_keys = _as_list(config_exclude_keys)
    if resume is None:
        resume = fields.get("resume") or _env("WANDB_RESUME")
    if isinstance(config, Namespace):
        config = vars(config)
    if config is not None and (config_include_keys or config_exclude_keys):
        config = {k: v for k, v in dict(config).items()
                  if (not config_include_keys or k in config_include_keys)
                  and k not in (config_exclude_keys or ())}  # fmt: skip
    resume_mode = _RESUME.get(resume) if resume not in (None, False) else None
    if resume not in (None, False) and resume_mode is None:
        _warn_once(f"resume {resume!r}", "runstream.wandb: unknown resume %r, ignored", resume)
    if resume_mode == "allow" and not id:
        resume_mode = None  # wandb 0.31: resume="allow"/True/"auto" without an id starts a new run
    started = _init(
        project=project,
        name=name,
        config=config,
        tags=_as_list(tags) or None,
        group=group,
        job_type=job_type,
        notes=notes,
        id=id,
        resume=resume_mode,  # type: ignore[arg-type]
        mode=resolved_mode,  # type: ignore[arg-type]
        dir=local_dir,
        settings=base,
    )
    _created[:] = [r for r in _created if not r.finished]
    _created.append(started)
    if policy != "create_new" or _current() is None:
        # create_new leaves wandb.run alone (wandb 0.31); with none open it becomes the run.
        _run = started
    return started


def _as_list(value: Any) -> list[Any] | None:
    """A parameter wandb documents as a list of strings: a lone ``str`` is one element (not its
    characters, as ``list("best")`` would make it), ``None`` stays ``None``, another iterable
    becomes a list; anything else is passed on as one element for the SDK to refuse."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _current() -> Run | None:
    run = _run
    return run if run is not None and not run.finished else None


def log(
    data: Mapping[str, Any] | None = None,
    step: int | None = None,
    commit: bool | None = None,
    *args: Any,
    **kwargs: Any,
) -> None:
    """``wandb.log`` on ``wandb.run``, as :meth:`Run.log` (``sync=`` accepted, unknown keywords
    warned about once). In a forked child, or after the run finished, the call is ignored with
    the same one warning ``run.log`` gives; with no run at all, with the warning of
    ``runstream.log``. Never raises."""
    target = _run  # even finished: its log() says why the call is ignored (fork, finish)
    if target is None:
        import runstream

        runstream._no_run("log")
        return
    target.log(data, step, True if commit is None else commit, *args, **kwargs)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> _FinishResult | None:
    """``wandb.finish``: finish ``wandb.run``; ``wandb.run`` is None afterwards (not an older
    run). With no run open, a no-op (as in wandb). Without ``exit_code`` while an exception is
    in flight (a ``finally:`` it passes through), the run ends ``failed``/1 (``killed``/130
    for KeyboardInterrupt), as :meth:`runstream.Run.finish` does; wandb records 0."""
    global _run
    current, _run = _current(), None
    if current is None:
        return None
    return current.finish(exit_code=exit_code)


def define_metric(  # noqa: PLR0917 - wandb's argument order
    name: str,
    step_metric: str | None = None,
    step_sync: bool | None = None,
    hidden: bool | None = None,
    summary: str | None = None,
    goal: str | None = None,
    overwrite: bool | None = None,
    **ignored: Any,
) -> None:
    """``wandb.define_metric`` on ``wandb.run`` (wandb's argument order): see
    :meth:`runstream.Run.define_metric`. Before ``init()``, ignored with one warning."""
    current = _current()
    if current is None:
        _no_run("define_metric")
        return
    current.define_metric(name, summary, step_metric=step_metric, step_sync=step_sync,
                          goal=goal, hidden=hidden, overwrite=overwrite)  # fmt: skip


def alert(
    title: str, text: str = "", level: AlertLevel | str = AlertLevel.INFO, **ignored: Any
) -> None:
    """``wandb.alert`` on ``wandb.run`` (:meth:`runstream.Run.alert`). Before ``init()``:
    ignored, warned once and counted in ``runstream.no_run_calls["alert"]``."""
    current = _current()
    if current is None:
        _no_run("alert")
        return
    current.alert(title, text, level=level)


def login(*_: Any, **__: Any) -> bool:
    """Nothing to log in to: runstream talks to your own Kafka."""
    return True


def setup(settings: Settings | None = None, **_: Any) -> None:
    """``wandb.setup``: nothing to start (runstream's worker starts with the first run)."""
    return None


def teardown(exit_code: int | None = None) -> None:
    """``wandb.teardown``: finish every run this module started that is still open."""
    global _run
    for run in list(_created):
        if not run.finished:
            run.finish(exit_code=exit_code)
    _created.clear()
    _run = None


def require(*_: Any, **__: Any) -> None:
    """``wandb.require("service")`` and the like: runstream has no such switches."""
    return None


_said: set[str] = set()


def _term(level: int, message: str, repeat: bool, prefix: bool) -> None:
    if not repeat:
        if message in _said:
            return
        _said.add(message)
    logger.log(level, "%s%s", "wandb: " if prefix else "", message)


def termlog(
    string: str = "", newline: bool = True, repeat: bool = True, prefix: bool = True
) -> None:
    """``wandb.termlog``: an INFO line on the ``runstream`` logger (``repeat=False``: once)."""
    _term(logging.INFO, str(string), repeat, prefix)


def termwarn(string: str, repeat: bool = True, prefix: bool = True, **_: Any) -> None:
    """``wandb.termwarn``: a WARNING line on the ``runstream`` logger (``repeat=False``: once)."""
    _term(logging.WARNING, str(string), repeat, prefix)


def termerror(string: str, repeat: bool = True, prefix: bool = True, **_: Any) -> None:
    """``wandb.termerror``: an ERROR line on the ``runstream`` logger (``repeat=False``: once)."""
    _term(logging.ERROR, str(string), repeat, prefix)


# --- wandb.config and wandb.summary ------------------------------------------------------------
class _CurrentMapping(MutableMapping[str, Any]):
    """``wandb.config`` / ``wandb.summary``: ``wandb.run``'s. Before ``init()``: ``config`` is a
    scratch dict the run does not take over; writes to ``summary`` are ignored, warned about
    once and counted in ``runstream.no_run_calls["wandb.summary"]`` (wandb raises)."""

    def __init__(self, attribute: str) -> None:
        object.__setattr__(self, "_attribute", attribute)
        object.__setattr__(self, "_scratch", {})
        object.__setattr__(self, "_refusals", _Refusals())

    def _target(self) -> MutableMapping[str, Any]:
        current = _current()
        return getattr(current, self._attribute) if current is not None else self._scratch  # type: ignore[no-any-return]

    def _writable(self) -> MutableMapping[str, Any] | None:
        current = _current()
        if current is not None:
            return getattr(current, self._attribute)  # type: ignore[no-any-return]
        if self._attribute == "summary":
            _no_run("summary")
            return None
        return self._scratch  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        return self._target()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        target = self._writable()
        if target is not None:
            target[key] = value

    def __delitem__(self, key: str) -> None:
        del self._target()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._target())

    def __len__(self) -> int:
        return len(self._target())

    def update(  # type: ignore[override] # wandb's signature, a superset of dict's
        self, d: Any = None, allow_val_change: bool | None = None, **kwargs: Any
    ) -> None:
        """Set several keys: wandb's ``config.update(d, allow_val_change=None)`` (by position
        or keyword; ``allow_val_change`` is never a key: runstream always lets a value
        change), ``summary.update(d)``; ``d`` as :func:`runstream.producers.mappings.
        read_config` takes it."""
        target = self._writable()
        if target is None:
            return
        if isinstance(target, _RunConfig):
            target.update(d, allow_val_change, **kwargs)
            return
        values = _read_config(d, self._refusals)
        values.update(kwargs)
        target.update(values)

    def update_locked(self, d: Any, user: Any = None, _allow_val_change: Any = None) -> None:
        """wandb's ``config.update_locked``: as :meth:`update`."""
        self.update(d)

    def setdefaults(self, d: Mapping[str, Any] | Namespace) -> None:
        """Set the keys of ``d`` not set yet (wandb's ``config.setdefaults(d)``)."""
        defaults = _read_config(d, self._refusals)
        target = self._target()
        missing = {k: v for k, v in defaults.items() if k not in target}
        if missing:
            self.update(missing)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._target())

    def __getattr__(self, key: str) -> Any:
        try:
            return self._target()[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __repr__(self) -> str:
        return repr(dict(self._target()))


config = _CurrentMapping("config")
summary = _CurrentMapping("summary")


def __getattr__(name: str) -> Any:
    if name == "run":  # read at call time: init() and finish() change it
        return _current()
    raise AttributeError(
        f"runstream.wandb does not cover wandb.{name}; docs/wandb.md lists what it covers"
    )


__all__ = [
    "AlertLevel",
    "Api",
    "Artifact",
    "Audio",
    "Error",
    "Graph",
    "Histogram",
    "Html",
    "Image",
    "Molecule",
    "Object3D",
    "Plotly",
    "Run",
    "Settings",
    "Table",
    "Video",
    "__version__",
    "alert",
    "apis",
    "config",
    "define_metric",
    "env",
    "errors",
    "finish",
    "init",
    "install",
    "installed",
    "log",
    "log_artifact",
    "log_code",
    "login",
    "require",
    "save",
    "sdk",
    "setup",
    "summary",
    "teardown",
    "termerror",
    "termlog",
    "termwarn",
    "uninstall",
    "unwatch",
    "use_artifact",
    "util",
    "wandb_run",
    "watch",
]
