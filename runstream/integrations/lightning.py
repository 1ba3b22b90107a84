"""Lightning: :class:`RunstreamLogger`, a ``Logger`` for ``lightning.pytorch.Trainer``.

```python
from runstream.integrations.lightning import RunstreamLogger

trainer = Trainer(logger=RunstreamLogger(project="mnist", config={"data": "v2"}))
trainer.fit(model, datamodule)
```

It follows the conventions of Lightning's own loggers (``loggers/wandb.py``, ``mlflow.py``,
``csv_logs.py`` of Lightning 2.6): every method that writes is ``@rank_zero_only``,
:attr:`RunstreamLogger.experiment` is ``@rank_zero_experiment`` (the :class:`~runstream.Run` on
global rank zero, a do-nothing object elsewhere), hyperparameters are converted and flattened
with Lightning's own helpers, metrics are logged at the step Lightning passes (the count of
optimizer steps, ``fit_loop.epoch_loop._batches_that_stepped``), and ``finalize(status)`` ends
the run with the matching status. docs/integrations/lightning.md says what is logged where.

The ``lightning`` package is used; with only the older ``pytorch_lightning`` installed, that one.
Lightning is imported here only: ``import runstream`` never imports it.
"""

from __future__ import annotations

import logging
import os
import sys
from argparse import Namespace
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runstream._extras import require_installed
from runstream.integrations._lazy_run import check_arguments
from runstream.producers.ending import exit_status

if find_spec("lightning") is not None or find_spec("pytorch_lightning") is None:
    require_installed("lightning", part="runstream.integrations.lightning", extra="lightning")
    from lightning.fabric.loggers.logger import rank_zero_experiment
    from lightning.fabric.utilities.logger import (
        _add_prefix,
        _convert_params,
        _flatten_dict,
        _sanitize_callable_params,
    )
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.loggers.logger import Logger
else:  # only the older distribution: the same API under its old names
    from lightning_fabric.loggers.logger import (  # type: ignore[no-redef,unused-ignore]
        rank_zero_experiment,
    )
    from lightning_fabric.utilities.logger import (  # type: ignore[no-redef,unused-ignore]
        _add_prefix,
        _convert_params,
        _flatten_dict,
        _sanitize_callable_params,
    )
    from lightning_fabric.utilities.rank_zero import (  # type: ignore[no-redef,unused-ignore]
        rank_zero_only,
    )
    from pytorch_lightning.loggers.logger import (  # type: ignore[assignment,unused-ignore]
        Logger,
    )

if TYPE_CHECKING:
    from runstream.producers.run import Run

logger = logging.getLogger("runstream")

__all__ = ["RunstreamLogger"]

LogModel = bool | Literal["all"]

# Lightning's statuses (trainer/call.py: "success" at the end of fit/validate/test/predict,
# "failed" when anything is raised in them, KeyboardInterrupt included; signal_connector.py:
# "finished" before a SLURM requeue) -> (exit code, run status).
_STATUSES: dict[str, tuple[int, str]] = {
    "success": (0, "finished"),
    "finished": (0, "finished"),
    "failed": (1, "failed"),
}


class RunstreamLogger(Logger):
    """Logs a Lightning ``Trainer`` into a runstream run.

    Keyword arguments are those of :func:`runstream.init` (``project``, ``name``, ``config``,
    ``tags``, ``group``, ``job_type``, ``notes``, ``id``, ``resume``, ``mode``, ``dir``,
    ``settings``), passed on unchanged when the run starts, plus:

    - ``version``: the run id (the same as ``id``). A logger given the id of an existing run
      continues it (``resume="allow"`` unless ``resume`` says otherwise; docs/sdk.md "Resume").
    - ``run``: log into a run you started yourself; the logger then never finishes it.
    - ``log_model``: as Lightning's ``WandbLogger``: ``False`` (default) records no checkpoint;
      ``True`` records the checkpoints of the ``ModelCheckpoint`` callback when training ends
      well (or each one as it is saved when ``save_top_k == -1``); ``"all"`` each one as it is
      saved. Each is a ``run.log_artifact(path, name=f"model-{run id}", type="model")``.
    - ``prefix``: put before every metric name, joined with ``-`` (as Lightning's loggers do).
    - ``save_dir``: where Lightning writes checkpoints (``<save_dir>/<project>/<run
      id>/checkpoints``); ``None``: the Trainer's ``default_root_dir``. runstream's own spool is
      ``dir``.

    The run starts when Lightning first uses the logger (at the start of ``fit``), on global
    rank zero only; other ranks log nothing. ``finalize`` ends it: ``success`` -> ``finished``,
    ``failed`` -> ``failed``, or ``killed`` when the exception ending the Trainer is a
    ``KeyboardInterrupt`` (Lightning passes ``failed`` for both). A logger that writes again
    after ``finalize`` (``trainer.test`` or a second ``fit`` that logs) continues the same run,
    which then ends as that phase ends; reading :attr:`experiment`, :attr:`name`,
    :attr:`version` or :attr:`save_dir` never does (the ended run's status stays).

    Raises:
        ValueError: ``version`` and ``id`` name different runs, or ``log_model`` is not
            ``True``, ``False`` or ``"all"``.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        *,
        version: str | None = None,
        run: Run | None = None,
        log_model: LogModel = False,
        prefix: str = "",
        save_dir: str | os.PathLike[str] | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        given_id = init_kwargs.pop("id", None)
        if version is not None and given_id is not None and str(version) != str(given_id):
            raise ValueError(
                f"RunstreamLogger: version={version!r} and id={given_id!r} name different runs; "
                "pass one of them (the version is the run id)"
            )
        if log_model not in (True, False, "all"):
            raise ValueError(
                f"RunstreamLogger: log_model must be True, False or 'all', not {log_model!r}"
            )
        check_arguments("RunstreamLogger", init_kwargs, run, "version, log_model, prefix, save_dir")
        run_id = version if version is not None else given_id
        self._id: str | None = None if run_id is None else str(run_id)
        self._init_kwargs = init_kwargs
        self._run: Run | None = run
        self._own_run = run is None
        self._log_model: LogModel = log_model
        self._prefix = prefix
        self._save_dir = None if save_dir is None else os.fspath(save_dir)
        self._checkpoint_callback: Any = None
        self._logged_checkpoints: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Strategies that spawn processes pickle the Trainer and its loggers: a run does not
        travel (its worker, spool and producer belong to this process); its id does, so rank
        zero of the new process continues the same run (as ``WandbLogger`` does)."""
        state = dict(self.__dict__)
        if self._run is not None:
            # A run given with run= is continued there too, and left for the process's exit
            # hooks to finish (the user finishes it in this process).
            state["_id"] = self._run.id
            state["_run"] = None
        state["_checkpoint_callback"] = None
        return state

    # --- what Lightning asks of a logger --------------------------------------------------------
    @property
    @rank_zero_experiment
    def experiment(self) -> Run:
        """The :class:`~runstream.Run` (on global rank zero; elsewhere Lightning's do-nothing
        object), started on first use.

        Reading it never reopens a run ``finalize`` ended: after ``finalize`` it is that ended
        run (its ``id``, ``name``, ``config`` read as before; calls that write into it are
        ignored with one "after finish()" warning, as the SDK does for any finished run). The
        run is continued only when the logger itself writes again (``log_metrics``,
        ``log_hyperparams``, a checkpoint recorded: a later ``trainer.test`` or ``fit``)."""
        run = self._run
        if run is None:
            run = self._start()
        return run

    def _writing_run(self) -> Run:
        """The run to write into: :attr:`experiment`, continued first (the same id,
        ``resume="allow"``) when ``finalize`` ended it and it is the logger's own."""
        run = self._run
        if run is None or (self._own_run and run.finished):
            run = self._start()
        return run

    def _start(self) -> Run:
        import runstream

        kwargs = dict(self._init_kwargs)
        if self._run is not None:  # finalized earlier: this is the same run, continued
            kwargs["id"] = self._run.id
            kwargs["resume"] = "allow"
            # The config as it stands (config= and the hyperparameters logged since), not the
            # constructor's config= alone: that would put back values hyperparameters replaced.
            # A resumed Run holds only the config it is given, so it is given all of it.
            kwargs["config"] = dict(self._run.config)
        elif self._id is not None:
            kwargs["id"] = self._id
            kwargs.setdefault("resume", "allow")
        self._run = runstream.init(**kwargs)
        self._id = self._run.id
        return self._run

    @property
    def name(self) -> str | None:
        """The project, as ``WandbLogger.name`` is (checkpoints go to
        ``save_dir/<name>/<version>``)."""
        if self._run is not None:
            return self._run.project
        project = self._init_kwargs.get("project")
        if project is not None:
            return str(project)
        settings = self._init_kwargs.get("settings")
        if settings is not None:
            return str(settings.project)
        from runstream.settings import Settings

        return Settings.load().project

    @property
    def version(self) -> str | None:
        """The run id: the one given, else the started run's (``None`` before it starts)."""
        if self._run is not None:
            return self._run.id
        return self._id

    @property
    def save_dir(self) -> str | None:
        """Where Lightning saves checkpoints for this logger (``None``: its default_root_dir)."""
        return self._save_dir

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Record ``params`` (a dict or ``argparse.Namespace``) as config keys, converted as
        Lightning's loggers do: callables by their result or name, nested dicts (and dataclasses,
        namespaces, lists of dicts) flattened to ``a/b`` keys. After ``finalize``, params the
        run's config holds already (Lightning logs them again at each phase's start) are not
        sent and do not continue the run; others continue it. Never raises."""
        try:
            converted = _convert_params(params)
            converted = _sanitize_callable_params(converted)
            flat = _flatten_dict(converted)
        except Exception as exc:  # a tracking problem never stops training
            logger.warning("runstream: hyperparameters not recorded: %s", exc)
            return
        run = self._run
        if run is not None and run.finished and _recorded(run.config, flat):
            # Lightning logs the module's hyperparameters again at the start of every phase
            # (`predict` too): the same values do not continue a run an earlier phase ended.
            return
        # Values the SDK cannot store as they are become text, with one warning (docs/sdk.md).
        self._writing_run().config.update(flat)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step``: the step Lightning passes (the global step the training
        batch ran at, from 0; validation at the step of the last training batch; ``None``: one
        past the run's highest step). Names get ``prefix-`` when a prefix was given. Never
        raises."""
        values: dict[str, Any] = dict(metrics)
        if self._prefix:
            values = {**_add_prefix(values, self._prefix, self.LOGGER_JOIN_CHAR)}
        self._writing_run().log(values, step=step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """With ``log_model="all"`` (or ``True`` and ``save_top_k == -1``) record the new
        checkpoints now; with ``True`` remember the callback to record them at the end."""
        if self._log_model == "all" or (
            self._log_model is True and getattr(checkpoint_callback, "save_top_k", None) == -1
        ):
            self._log_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callback = checkpoint_callback

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End the run with the status Lightning reports (see the class docstring); a run given
        with ``run=`` stays open. Never raises."""
        run = self._run
        if run is None:
            return
        callback, self._checkpoint_callback = self._checkpoint_callback, None
        if status == "success" and callback is not None:
            # This phase's checkpoints; a phase that ended otherwise records none (as
            # WandbLogger), and they are not left for a later phase's success to record.
            self._log_checkpoints(callback)
            run = self._run  # recording them continues a run an earlier phase ended
        if run is None or not self._own_run or run.finished:
            return
        exit_code, run_status = _STATUSES.get(status, (1, "failed"))
        if run_status == "failed":
            # Lightning calls finalize("failed") inside its `except` (trainer/call.py
            # _interrupt), for KeyboardInterrupt too: the exception in flight tells them apart.
            exc_type, exc, _ = sys.exc_info()
            if exc_type is not None:
                exit_code, run_status = exit_status(exc_type, exc)
                if run_status == "finished":  # sys.exit(0) inside training: still not a success
                    exit_code, run_status = 1, "failed"
        run.finish(exit_code=exit_code, status=run_status)

    # --- checkpoints ------------------------------------------------------------------------
    def _log_checkpoints(self, checkpoint_callback: Any) -> None:
        """Record every checkpoint file of the callback not recorded yet (or rewritten since),
        oldest first, as ``WandbLogger`` picks them (last, best, best k)."""
        try:
            paths = _checkpoint_paths(checkpoint_callback)
        except Exception as exc:
            logger.warning("runstream: checkpoints not recorded: %s", exc)
            return
        fresh = [(mtime, path) for mtime, path in paths
                 if self._logged_checkpoints.get(path, -1.0) < mtime]  # fmt: skip
        if not fresh:  # nothing to record: an ended run stays ended
            return
        run = self._writing_run()
        for mtime, path in fresh:
            run.log_artifact(path, name=f"model-{run.id}", type="model")
            self._logged_checkpoints[path] = mtime


def _recorded(config: Mapping[str, Any], flat: Mapping[str, Any]) -> bool:
    """Whether every key of ``flat`` is in ``config`` with the same value (a ``None`` value:
    absent or ``None``, as the config does not keep it)."""
    for key, value in flat.items():
        if value is None:
            if config.get(key) is not None:
                return False
        elif key not in config or config[key] != value:
            return False
    return True


def _checkpoint_paths(checkpoint_callback: Any) -> list[tuple[float, str]]:
    """(mtime, path) of the callback's existing checkpoint files, oldest first: its last, best
    and best-k paths (lightning/pytorch/loggers/utilities.py ``_scan_checkpoints``)."""
    candidates: set[str] = set()
    for attribute in ("last_model_path", "best_model_path"):
        path = getattr(checkpoint_callback, attribute, "")
        if path:
            candidates.add(str(path))
    candidates.update(str(p) for p in getattr(checkpoint_callback, "best_k_models", {}) or {})
    found = []
    for path in candidates:
        file = Path(path)
        if file.is_file():
            found.append((file.stat().st_mtime, path))
    return sorted(found)
