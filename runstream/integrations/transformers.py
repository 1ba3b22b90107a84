"""Hugging Face Transformers: log a ``Trainer``'s training to runstream.

```python
from runstream.integrations.transformers import RunstreamCallback

trainer = Trainer(model=model, args=TrainingArguments(..., report_to="none"),
                  train_dataset=train, eval_dataset=val,
                  callbacks=[RunstreamCallback(project="bert-sst2", tags=["baseline"])])
trainer.train()
```

What is logged, under which names (the rule of transformers' ``WandbCallback`` and its
``rewrite_logs``, ``transformers/integrations/integration_utils.py``):

- every ``on_log`` of the world process zero, at step ``state.global_step``: ``eval_<x>`` as
  ``eval/<x>``, ``test_<x>`` as ``test/<x>``, anything else as ``train/<x>`` (``loss`` ->
  ``train/loss``, ``learning_rate`` -> ``train/learning_rate``, ``grad_norm`` ->
  ``train/grad_norm``, ``epoch`` -> ``train/epoch``);
- except the trainer's end-of-training report, which goes to the run's summary under the
  trainer's own names (:func:`is_summary_key`: ``train_runtime``, ``train_samples_per_second``,
  ``train_steps_per_second``, ``train_loss``, ``total_flos``, as ``WandbCallback`` does, plus
  any other ``train_*_per_second`` and the memory report ``train_mem_*``);
- ``trainer.predict()``'s metrics (``on_predict``, ``test_<x>``) as ``test/<x>``;
- config (at train begin): the model's config (``model.config.to_dict()``), then
  ``TrainingArguments.to_dict()`` over it (its ``*_token`` fields masked by transformers), the
  effective ``train_batch_size`` and ``eval_batch_size``, ``model/num_parameters`` and
  ``peft_config`` when the model has them: ``WandbCallback``'s config. Keys the trainer sets win
  over the same keys in ``config=`` (they are what the trainer used).

The run's status: the run this callback starts ends in ``on_train_end`` as ``finished``. The
trainer calls no callback when ``train()`` raises, so the callback wraps the trainer's ``train``
on the instance (``trainer.train``, found on the call stack in ``on_init_end``; the class and
the library are not changed): an exception leaving ``train()`` finishes the run as ``failed``
(exit code 1), ``KeyboardInterrupt`` as ``killed`` (130), and the exception goes on unchanged.
A callback added after the trainer was built (``trainer.add_callback``) wraps ``train`` at its
first ``on_train_begin``, for the calls after that one; for that first call an exception ends
the run through runstream's exit hooks when it ends the program (docs/sdk.md, "Ending well").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from runstream.integrations._lazy_run import LazyRun, find_caller_self, guarded

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from runstream.producers.run import Run

logger = logging.getLogger("runstream")

SUMMARY_KEYS = frozenset(
    {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss",
     "total_flos"}
)  # fmt: skip
"""The keys transformers' ``WandbCallback`` sends to the summary instead of logging them."""


def is_summary_key(key: str) -> bool:
    """Whether a key of the trainer's logs belongs to the run's summary rather than to its
    metrics: :data:`SUMMARY_KEYS`, and the other keys of the trainer's end-of-training report
    (``train_<x>_per_second`` from ``speed_metrics``, ``train_mem_*`` from its memory tracker).
    """
    return (
        key in SUMMARY_KEYS
        or key.startswith("train_mem_")
        or (key.startswith("train_") and key.endswith("_per_second"))
    )


def split_logs(logs: Mapping[Any, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trainer log as (metrics by runstream name, summary by the trainer's name).

    Metric names follow transformers' ``rewrite_logs`` (``eval_x`` -> ``eval/x``, ``test_x``
    -> ``test/x``, else ``train/x``); summary keys are those of :func:`is_summary_key`, named as
    the trainer names them. Each key lands in exactly one of the two, under a name no other key
    takes. Values are passed on as they are: the SDK refuses what is not a number (one warning).
    """
    metrics: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for raw, value in logs.items():
        key = str(raw)
        if is_summary_key(key):
            summary[key] = value
        elif key.startswith("eval_"):
            metrics["eval/" + key[5:]] = value
        elif key.startswith("test_"):
            metrics["test/" + key[5:]] = value
        else:
            metrics["train/" + key] = value
    return metrics, summary


def training_config(args: TrainingArguments, model: Any) -> dict[str, Any]:
    """The config ``WandbCallback`` records: the model's config, ``args.to_dict()`` over it,
    and ``model/num_parameters`` and ``peft_config`` when the model has them; plus the
    effective batch sizes of ``args.to_sanitized_dict()``. Each part that cannot be read is
    left out with one debug line (a model without ``config`` has none)."""
    config: dict[str, Any] = {}
    model_config = getattr(model, "config", None)
    if model_config is not None:
        _merge(config, "model.config", lambda: _as_dict(model_config))
    peft_config = getattr(model, "peft_config", None)
    if peft_config is not None:
        config["peft_config"] = peft_config
    _merge(config, "TrainingArguments", args.to_dict)
    _merge(
        config,
        "batch sizes",
        lambda: {
            "train_batch_size": args.train_batch_size,
            "eval_batch_size": args.eval_batch_size,
        },
    )
    if callable(getattr(model, "num_parameters", None)):
        _merge(config, "num_parameters", lambda: {"model/num_parameters": model.num_parameters()})
    return config


def _as_dict(config: Any) -> dict[str, Any]:
    return dict(config) if isinstance(config, Mapping) else dict(config.to_dict())


def _merge(config: dict[str, Any], what: str, read: Callable[[], Mapping[str, Any]]) -> None:
    try:
        config.update(read())
    except Exception as exc:  # one unreadable part costs that part
        logger.debug("runstream: RunstreamCallback: %s not recorded: %r", what, exc)


class RunstreamCallback(TrainerCallback):
    """A ``TrainerCallback`` that logs the trainer's metrics, config and summary to a run.

    ``Trainer(..., callbacks=[RunstreamCallback(project="p", name="...", tags=[...])])``.
    Takes the keyword arguments of :func:`runstream.init` (``project``, ``name``, ``config``,
    ``tags``, ``group``, ``job_type``, ``notes``, ``id``, ``resume``, ``mode``, ``dir``,
    ``settings``) and passes them on unchanged when it starts the run: lazily, at the first
    ``on_train_begin`` (or ``on_log``, for an evaluation before training) of the world process
    zero; other processes never start one. The run's name defaults to the trial's name in a
    hyperparameter search (its group to ``args.run_name`` or ``args.output_dir``), else to
    ``args.run_name`` when set, as ``WandbCallback`` does.

    ``run=``: log into a run you started instead. It is not finished here (you finish it, e.g.
    with ``with runstream.init(...) as run:``), so ``trainer.evaluate()`` after ``train()``
    lands in it too; with a run of its own, the callback finishes it when training ends, a new
    ``train()`` starts a new run, and values logged in between are not recorded (one warning).

    Raises ``TypeError`` here for a keyword ``runstream.init`` does not take. After that it
    never raises into training: a failing hook is logged once, and a run that cannot start is
    reported once while training goes on. See the module's docstring for names and statuses.
    """

    def __init__(self, *, run: Run | None = None, **init_kwargs: Any) -> None:
        super().__init__()
        self._runs = LazyRun(type(self).__name__, init_kwargs, run)
        self._configured: Run | None = None
        self._warned_ended = False

    @property
    def run(self) -> Run | None:
        """The run logged into: None before it started and on processes other than zero."""
        return self._runs.run

    # --- the trainer's events ----------------------------------------------------------------
    @guarded
    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._watch_trainer(("__init__",))

    @guarded
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._watch_trainer(("_inner_training_loop", "train"))  # added after __init__
        if state.is_world_process_zero:
            self._start(args, state, kwargs.get("model"), new=True)

    @guarded
    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and logs:
            self._log(args, state, kwargs.get("model"), logs)

    @guarded
    def on_predict(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and metrics:
            self._log(args, state, kwargs.get("model"), metrics)

    @guarded
    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            self._runs.end()

    # --- what the events do ------------------------------------------------------------------
    def _start(
        self, args: TrainingArguments, state: TrainerState, model: Any, new: bool
    ) -> Run | None:
        run = self._runs.get(_init_defaults(args, state), new=new)
        if run is not None and run is not self._configured and not run.finished:
            self._configured = run
            run.config.update(training_config(args, model))
        return run

    def _log(
        self, args: TrainingArguments, state: TrainerState, model: Any, logs: Mapping[str, Any]
    ) -> None:
        run = self._start(args, state, model, new=False)
        if run is None:
            return
        if run.finished and self._runs.owned:
            if not self._warned_ended:
                self._warned_ended = True
                logger.warning(
                    "runstream: RunstreamCallback: the run %s ended with training, so values "
                    "the trainer logs after train() (trainer.evaluate(), trainer.predict()) are "
                    "not recorded. To record them in the same run, start it yourself and pass "
                    "it: RunstreamCallback(run=runstream.init(...)), then finish it. (warned once)",
                    run.id,
                )
            return
        metrics, summary = split_logs(logs)
        if metrics:
            run.log(metrics, step=state.global_step)
        if summary:
            run.summary.update(summary)

    def _watch_trainer(self, frames: tuple[str, ...]) -> None:
        """Wrap ``train`` of the trainer this callback belongs to, found on the call stack."""
        from transformers import Trainer

        found = find_caller_self(frames, Trainer)
        if found is None:
            return
        trainer = found[0]
        handler = getattr(trainer, "callback_handler", None)
        if handler is None or not any(cb is self for cb in handler.callbacks):
            return  # another trainer (one built inside a callback, say): not ours
        current = vars(trainer).get("train")
        if getattr(current, "_runstream_callback", None) is self:
            return
        vars(trainer)["train"] = _ending_train(trainer.train, self)

    def _ended_by(self, exc: BaseException) -> None:
        try:
            self._runs.end(exc)
        except Exception:  # never replace the trainer's exception with ours
            logger.warning(
                "runstream: could not finish the run after train() raised", exc_info=True
            )


def _ending_train(train: Callable[..., Any], callback: RunstreamCallback) -> Callable[..., Any]:
    """``train`` that, when it raises, first ends the callback's run with that exception, then
    re-raises it unchanged."""

    @functools.wraps(train)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return train(*args, **kwargs)
        except BaseException as exc:
            callback._ended_by(exc)
            raise

    wrapper._runstream_callback = callback  # type: ignore[attr-defined]
    return wrapper


def _init_defaults(args: TrainingArguments, state: TrainerState) -> dict[str, Any]:
    """``runstream.init`` arguments taken from the trainer when the user gave none: the names
    ``WandbCallback`` gives (a trial's name and group in a hyperparameter search, else
    ``args.run_name``)."""
    run_name = getattr(args, "run_name", None)
    trial_name = getattr(state, "trial_name", None)
    if trial_name is not None:
        return {"name": trial_name, "group": run_name or args.output_dir}
    if run_name is not None and run_name != args.output_dir:
        return {"name": run_name}
    return {}


__all__ = ["SUMMARY_KEYS", "RunstreamCallback", "is_summary_key", "split_logs", "training_config"]
