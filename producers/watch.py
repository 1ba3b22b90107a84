"""``run.watch(model)``: gradient and parameter histograms of a torch module, as wandb's
``watch`` logs them (wandb/sdk/wandb_watch.py, wandb_torch.py).

- ``log="gradients"`` (default): a tensor hook on every parameter that requires a gradient;
  every ``log_freq``-th gradient of a parameter (calls ``log_freq``, ``2 * log_freq``...) is
  logged as ``gradients/<parameter name>``.
- ``log="parameters"``: a forward hook on the module; every ``log_freq``-th forward call logs
  ``parameters/<parameter name>`` for every parameter. ``log="all"``: both. ``None``: nothing.
- A second model of the run (or ``idx=i`` with ``i > 0``) gets names ``gradients/graph_<i>...``
  as in wandb.

The histograms of one backward pass (one forward call) go out as one ``histogram_logged``
event at the run's current step: the step the next ``log()`` without ``step=`` uses (or the
step a ``log(commit=False)`` is collecting), so they land next to that step's metrics.

torch is imported here only, and only when a model is watched: ``import runstream`` never
imports it. Nothing here raises into training: a model that is not a torch module, or a
histogram that cannot be built, is warned about once and counted (``refused_by_kind``).
"""

from __future__ import annotations

import contextlib
import sys
import time
import weakref
from typing import TYPE_CHECKING, Any

from runstream.producers.histograms import Histogram, histogram_body

if TYPE_CHECKING:
    from runstream.producers.run import Run

_LOG = {
    "gradients": (True, False),
    "parameters": (False, True),
    "all": (True, True),
    None: (False, False),
}

_WATCHES: weakref.WeakKeyDictionary[Any, list[_Watch]] = weakref.WeakKeyDictionary()


class _Watch:
    """The hooks of one watched module."""

    def __init__(self, run: Run, model: Any, prefix: str, log_freq: int) -> None:
        self.run = run
        self.model_ref = weakref.ref(model)
        self.prefix = prefix
        self.log_freq = log_freq
        self.handles: list[Any] = []
        self.grad_calls: dict[str, int] = {}
        self.forward_calls = 0
        self.pending: dict[str, Histogram] = {}
        self.expected = 0

    # --- hooks (the training thread) ------------------------------------------------------------
    def on_grad(self, name: str, grad: Any) -> None:
        try:
            if self._stopped():
                return
            count = self.grad_calls.get(name, 0) + 1
            if count < self.log_freq:
                self.grad_calls[name] = count
                return
            self.grad_calls[name] = 0
            self.pending[f"gradients/{self.prefix}{name}"] = Histogram(grad)
            if len(self.pending) >= self.expected:  # every gradient of this backward arrived
                self.flush()
        except Exception as exc:  # never into training
            self._failed(name, exc)

    def on_forward(self, module: Any, inputs: Any, output: Any) -> None:
        try:
            if self._stopped():
                return
            self.flush()  # gradients of a backward that did not reach every parameter
            self.forward_calls += 1
            if self.forward_calls < self.log_freq:
                return
            self.forward_calls = 0
            found = {
                f"parameters/{self.prefix}{name}": Histogram(param.detach())
                for name, param in module.named_parameters()
            }
            _send(self.run, found)
        except Exception as exc:
            self._failed("parameters", exc)

    def flush(self) -> None:
        if self.pending:
            found, self.pending = self.pending, {}
            _send(self.run, found)

    def _stopped(self) -> bool:
        if self.run._finished is None:
            return False
        self.remove()  # the run ended: wandb unwatches at finish too
        return True

    def _failed(self, name: str, exc: Exception) -> None:
        self.run._refusals.note(
            f"watch {name}",
            f"run {self.run.id}: watch: the histogram of {name!r} cannot be built "
            f"({type(exc).__name__}: {exc}); left out",
            "media",
            key="watch",
        )

    def remove(self) -> None:
        for handle in self.handles:
            with contextlib.suppress(Exception):
                handle.remove()
        self.handles = []


def _send(run: Run, found: dict[str, Histogram]) -> None:
    if run._finished is not None or not found:
        return
    step = run._pending_step if run._pending is not None else run._step
    run._submit((run._channel, "histogram_logged", time.time(), histogram_body, step, found, run))


def watch(
    run: Run,
    models: Any,
    log: str | None = "gradients",
    log_freq: int = 1000,
    idx: int | None = None,
) -> None:
    """Hook ``models`` (one torch module, or a list or tuple of them). Never raises."""
    try:
        _watch(run, models, log, log_freq, idx)
    except Exception as exc:
        run._refusals.note(
            "watch",
            f"run {run.id}: watch() failed ({type(exc).__name__}: {exc}); nothing is watched",
            "argument",
        )


def _watch(run: Run, models: Any, log: str | None, log_freq: Any, idx: int | None) -> None:
    if run.mode == "disabled":
        return
    if log not in _LOG:
        run._refusals.note(
            "watch",
            f"watch(log={log!r}): log must be 'gradients', "
            "'parameters', 'all' or None; nothing is watched",
            "argument",
        )
        return
    grads, params = _LOG[log]
    if not isinstance(log_freq, int) or isinstance(log_freq, bool) or log_freq < 1:
        run._refusals.note(
            "watch",
            f"watch(log_freq={log_freq!r}): log_freq must be an int >= 1; 1000 is used",
            "argument",
        )
        log_freq = 1000
    torch = sys.modules.get("torch")  # a torch module cannot exist without torch imported
    module_type = getattr(getattr(torch, "nn", None), "Module", None)
    listed = list(models) if isinstance(models, (list, tuple)) else [models]
    watches = _WATCHES.setdefault(run, [])
    start = len(watches) if idx is None else idx
    for offset, model in enumerate(listed):
        if module_type is None or not isinstance(model, module_type):
            run._refusals.note(
                "watch",
                f"run {run.id}: watch() takes torch.nn.Module "
                f"models, not {type(model).__name__}; it is not watched",
                "argument",
                key="not a module",
            )
            continue
        number = start + offset
        prefix = f"graph_{number}" if number > 0 else ""
        entry = _Watch(run, model, prefix, log_freq)
        if grads:
            for name, param in model.named_parameters():
                if param.requires_grad:
                    entry.handles.append(param.register_hook(_grad_hook(entry, name)))
                    entry.expected += 1
        if params or grads:
            # Parameters every log_freq forward calls; with gradients only, the forward hook
            # just flushes gradients of a backward pass that did not reach every parameter.
            hook = entry.on_forward if params else _flush_only(entry)
            entry.handles.append(model.register_forward_hook(hook))
        watches.append(entry)


def _grad_hook(entry: _Watch, name: str) -> Any:
    def hook(grad: Any) -> None:
        entry.on_grad(name, grad)

    return hook


def _flush_only(entry: _Watch) -> Any:
    def hook(module: Any, inputs: Any, output: Any) -> None:
        try:
            if not entry._stopped():
                entry.flush()
        except Exception as exc:
            entry._failed("gradients", exc)

    return hook


def unwatch(run: Run, models: Any = None) -> None:
    """Remove the hooks of ``models`` (every watched model when None). Never raises."""
    try:
        watches = _WATCHES.get(run, [])
        listed = (
            None
            if models is None
            else (list(models) if isinstance(models, (list, tuple)) else [models])
        )
        keep = []
        for entry in watches:
            model = entry.model_ref()
            if listed is None or any(model is m for m in listed):
                entry.flush()
                entry.remove()
            else:
                keep.append(entry)
        _WATCHES[run] = keep
    except Exception as exc:
        run._refusals.note("unwatch", f"unwatch() failed ({type(exc).__name__}: {exc})", "argument")
