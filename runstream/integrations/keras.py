"""Keras 3: :class:`RunstreamCallback`, a ``keras.callbacks.Callback`` for ``model.fit``.

```python
from runstream.integrations.keras import RunstreamCallback

model.fit(x, y, validation_data=(vx, vy), epochs=5,
          callbacks=[RunstreamCallback(project="mnist", log_freq="batch")])
```

Metric names follow wandb's ``WandbMetricsLogger`` (wandb/integration/keras): every value of
Keras' batch logs as ``batch/<name>``, of its epoch logs as ``epoch/<name>`` (so validation
values are ``epoch/val_<name>``), plus ``epoch/epoch`` and the optimizer's current
``epoch/learning_rate`` / ``batch/learning_rate``. Steps are a global batch counter: the batch's
index counted from the first batch of the callback's first ``fit`` (docs/integrations/keras.md).

Keras is imported here only: ``import runstream`` never imports it. Any Keras 3 backend works;
the tests use ``KERAS_BACKEND=torch``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from runstream._extras import require
from runstream.integrations._lazy_run import check_arguments
from runstream.producers.ending import exit_status

require("keras", part="runstream.integrations.keras", extra="keras")
import keras  # type: ignore[import-untyped,unused-ignore]  # noqa: E402

if TYPE_CHECKING:
    from runstream.producers.run import Run

logger = logging.getLogger("runstream")

__all__ = ["RunstreamCallback"]

LogFreq = Literal["epoch", "batch"] | int


class RunstreamCallback(keras.callbacks.Callback):  # type: ignore[misc,unused-ignore]
    """Logs ``model.fit`` into a runstream run.

    Keyword arguments are those of :func:`runstream.init` (``project``, ``name``, ``config``,
    ``tags``, ``group``, ``job_type``, ``notes``, ``id``, ``resume``, ``mode``, ``dir``,
    ``settings``), passed on unchanged when the run starts, plus:

    - ``log_freq``: ``"epoch"`` (default) logs epoch values only; ``"batch"`` also every
      batch's; an int ``n`` also the batches whose index within the epoch is a multiple of
      ``n`` (wandb's rule).
    - ``initial_global_step``: the step of the first batch (to continue the steps of an earlier
      process, e.g. with ``fit(initial_epoch=...)`` on a resumed run).
    - ``run``: log into a run you started yourself; the callback then never finishes it.
    - ``log_config``: record the optimizer's ``get_config()`` as config ``optimizer``, the
      model's ``get_config()`` (or, when it cannot be serialised, its layers' names, classes
      and parameter counts) as ``model``, and ``fit``'s ``epochs`` and ``steps`` as ``fit``;
      keys given in ``config`` win.

    Steps: batch ``b`` of epoch ``e`` is at ``initial_global_step`` + the number of batches of
    the epochs before ``e`` + ``b``; an epoch's values are at the step of its last batch.

    Status: the run starts at ``on_train_begin`` and ends ``finished`` at ``on_train_end``.
    Keras calls no callback when ``fit`` raises, so the callback wraps the model's
    ``train_function`` (and, during ``fit``'s validation, ``test_function``) for the time of
    ``fit``: an exception raised there ends the run ``failed`` (``KeyboardInterrupt``:
    ``killed``) before it leaves ``fit``. An exception raised elsewhere in ``fit`` (a data
    pipeline, another callback) ends the run when the program ends (runstream's exit hooks,
    with the program's exit status), or at once when ``fit`` runs inside ``with callback:``.
    A second ``fit`` with the same callback continues the same run and its steps.

    Raises:
        ValueError: ``log_freq`` is not ``"epoch"``, ``"batch"`` or a positive int.
    """

    def __init__(
        self,
        *,
        log_freq: LogFreq = "epoch",
        initial_global_step: int = 0,
        run: Run | None = None,
        log_config: bool = True,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        if log_freq == "batch":
            log_freq = 1
        if not (
            log_freq == "epoch"
            or (isinstance(log_freq, int) and not isinstance(log_freq, bool) and log_freq > 0)
        ):
            raise ValueError(
                f"RunstreamCallback: log_freq must be 'epoch', 'batch' or a positive int, "
                f"not {log_freq!r}"
            )
        own = "log_freq, initial_global_step, log_config"
        check_arguments("RunstreamCallback", init_kwargs, run, own)
        self._batch_every: int | None = None if log_freq == "epoch" else int(log_freq)
        self._init_kwargs = init_kwargs
        self._run: Run | None = run
        self._own_run = run is None
        self._log_config = log_config
        self._epoch_base = int(initial_global_step)  # step of the current epoch's batch 0
        self._last_batch = -1  # index within the epoch of the last batch seen
        self._wrapped: dict[str, Callable[..., Any]] = {}
        self._in_fit = False

    @property
    def run(self) -> Run | None:
        """The run logged into (``None`` before the first ``fit``). Reading it (or
        :attr:`global_step`) never starts or continues a run: after ``fit`` it is the ended
        run, whose status stays; only the next ``fit`` with this callback continues it."""
        return self._run

    @property
    def global_step(self) -> int:
        """The step of the next batch."""
        return self._epoch_base + self._last_batch + 1

    # --- Keras' hooks ---------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._in_fit = True
        # An earlier fit that ended inside an epoch: its batches keep their steps.
        self._epoch_base += self._last_batch + 1
        self._last_batch = -1
        config = self._keras_config() if self._log_config else {}
        run = self._run
        if run is None or (self._own_run and run.finished):
            run = self._start(config)
        elif config:
            # a run given with run= (or a second fit): add what it does not hold yet
            fresh = {k: v for k, v in config.items() if k not in run.config}
            if fresh:
                run.config.update(fresh)
        self._wrap("train_function")

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._last_batch = batch
        every = self._batch_every
        run = self._run
        if every is None or run is None or batch % every:
            return
        values = {f"batch/{k}": v for k, v in (logs or {}).items()}
        rate = self._learning_rate()
        if rate is not None:
            values.setdefault("batch/learning_rate", rate)
        run.log(values, step=self._epoch_base + batch)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        run = self._run
        step = self._epoch_base + max(self._last_batch, 0)
        self._epoch_base += self._last_batch + 1
        self._last_batch = -1
        if run is None:
            return
        values: dict[str, Any] = {f"epoch/{k}": v for k, v in (logs or {}).items()}
        values["epoch/epoch"] = epoch
        rate = self._learning_rate()
        if rate is not None:
            values.setdefault("epoch/learning_rate", rate)
        run.log(values, step=step)

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._in_fit:  # fit's validation; a standalone evaluate() has no run to end
            self._wrap("test_function")

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._unwrap("test_function")

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._in_fit = False
        self._unwrap("train_function")
        self._unwrap("test_function")
        run = self._run
        if run is not None and self._own_run and not run.finished:
            run.finish(exit_code=0, status="finished")

    # --- the run ------------------------------------------------------------------------------
    def _start(self, keras_config: dict[str, Any]) -> Run:
        import runstream

        kwargs = dict(self._init_kwargs)
        if self._run is not None:  # a second fit: the same run, continued
            kwargs["id"] = self._run.id
            kwargs["resume"] = "allow"
        given = kwargs.get("config")
        if keras_config:
            config = dict(keras_config)
            if given is not None:
                config.update(given if isinstance(given, Mapping) else vars(given))
            kwargs["config"] = config
        self._run = runstream.init(**kwargs)
        return self._run

    def finish(self, exc: BaseException | None = None) -> None:
        """End the run now: ``finished``, or as ``exc`` says (``failed``; ``killed`` for
        ``KeyboardInterrupt``). Does nothing to a run given with ``run=`` or already ended."""
        self._unwrap("train_function")
        self._unwrap("test_function")
        self._in_fit = False
        run = self._run
        if run is None or not self._own_run or run.finished:
            return
        exit_code, status = exit_status(None if exc is None else type(exc), exc)
        if exc is not None and status == "finished":  # sys.exit(0) inside fit: not a success
            exit_code, status = 1, "failed"
        run.finish(exit_code=exit_code, status=status)

    def __enter__(self) -> RunstreamCallback:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exc)

    # --- failure inside fit ---------------------------------------------------------------------
    def _wrap(self, attribute: str) -> None:
        """Replace ``model.<attribute>`` (called once per batch by every backend's ``fit``) by a
        function that ends the run when it raises. Undone at the end of ``fit``."""
        model = self.model
        original = getattr(model, attribute, None)
        if original is None or attribute in self._wrapped:
            return

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except BaseException as exc:
                self.finish(exc)
                raise

        self._wrapped[attribute] = original
        setattr(model, attribute, guarded)

    def _unwrap(self, attribute: str) -> None:
        original = self._wrapped.pop(attribute, None)
        if original is not None:
            try:
                setattr(self.model, attribute, original)
            except Exception:  # the model is gone: nothing to restore
                logger.debug("runstream: could not restore %s", attribute, exc_info=True)

    # --- what is read from the model --------------------------------------------------------------
    def _learning_rate(self) -> float | None:
        """The optimizer's current learning rate (a schedule's value at the current
        iteration), or None when the optimizer has none that reads as a number."""
        try:
            rate = self.model.optimizer.learning_rate
        except Exception:
            return None
        try:
            return float(rate)  # a Variable or a backend scalar tensor (a schedule's value)
        except Exception:
            try:
                return float(keras.ops.convert_to_numpy(rate))
            except Exception:
                return None

    def _keras_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        model = self.model
        try:
            config["optimizer"] = model.optimizer.get_config()
        except Exception as exc:
            logger.debug("runstream: no optimizer config: %s", exc)
        try:
            config["model"] = model.get_config()
        except Exception:  # a subclassed model without get_config(): what it is made of
            config["model"] = _layer_summary(model)
        params = getattr(self, "params", None) or {}
        fit = {k: params[k] for k in ("epochs", "steps") if k in params}
        if fit:
            config["fit"] = fit
        return config


def _layer_summary(model: Any) -> dict[str, Any]:
    """The model's class and, per layer, its name, class and number of weights' elements."""
    layers = []
    for layer in getattr(model, "layers", []) or []:
        try:
            count = int(layer.count_params())
        except Exception:  # an unbuilt layer has no count
            count = None
        layers.append({"name": layer.name, "class": type(layer).__name__, "params": count})
    return {"class": type(model).__name__, "name": getattr(model, "name", None), "layers": layers}
