"""accelerate: a ``GeneralTracker`` so that ``Accelerator(log_with=[...])`` logs to runstream.

```python
from accelerate import Accelerator
from runstream.integrations.accelerate import RunstreamTracker

accelerator = Accelerator(log_with=[RunstreamTracker(tags=["baseline"])])
accelerator.init_trackers("my-project", config={"lr": 1e-3},
                          init_kwargs={"runstream": {"name": "run-1"}})
for step, batch in enumerate(loader):
    ...
    accelerator.log({"train/loss": loss.item()}, step=step)
accelerator.end_training()
```

accelerate hands a custom tracker neither ``init_trackers``' ``project_name`` nor its
``init_kwargs`` (``Accelerator.init_trackers`` in ``accelerate/accelerator.py``: "Custom trackers
are already initialized"), so :meth:`RunstreamTracker.start` reads them from that call on the call
stack, which makes a custom tracker take them as accelerate's own trackers do:
``project_name`` becomes the run's project and ``init_kwargs["runstream"]`` are
:func:`runstream.init`'s arguments. The constructor's arguments win over both.

Status: ``accelerator.end_training()`` (``finish()``) ends the run ``finished``; called while an
exception is in flight (in a ``finally:`` or ``except:`` block around the training loop) it ends
it ``failed`` (exit code 1), or ``killed`` (130) for ``KeyboardInterrupt``. A run that is never
finished this way (an exception ends the script before ``end_training()``) is ended by
runstream's exit hooks with the status of how the program ends (docs/sdk.md, "Ending well").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from accelerate.tracking import GeneralTracker
from accelerate.tracking import on_main_process as _on_main_process

from runstream.integrations._lazy_run import (
    LazyRun,
    check_arguments,
    find_caller_self,
    guarded,
    in_flight,
)
from runstream.producers.run import Run

logger = logging.getLogger("runstream")

F = TypeVar("F", bound=Callable[..., Any])


def _main_process(method: F) -> F:
    """accelerate's own ``on_main_process``: the method runs on the main process only when
    the tracker's ``main_process_only`` is true (else on every process)."""
    return cast(F, _on_main_process(method))


class RunstreamTracker(GeneralTracker):
    """An accelerate tracker that logs to a runstream run.

    ``Accelerator(log_with=[RunstreamTracker(project=..., name=..., tags=[...])])``. Takes the
    keyword arguments of :func:`runstream.init` (``project``, ``name``, ``config``, ``tags``,
    ``group``, ``job_type``, ``notes``, ``id``, ``resume``, ``mode``, ``dir``, ``settings``) and
    passes them on unchanged, over ``init_kwargs["runstream"]`` and ``project_name`` of
    ``accelerator.init_trackers`` (see the module's docstring). ``run=``: log into a run you
    started instead; it is then never finished here.

    The run starts at ``init_trackers`` (:meth:`start`), on the main process only
    (``main_process_only = True``, accelerate's ``on_main_process``); on accelerate versions that
    do not call ``start()``, at the first :meth:`store_init_configuration` or :meth:`log`. Raises
    ``TypeError`` for an argument ``runstream.init`` does not take (in the constructor or in
    ``init_kwargs["runstream"]``); after that it never raises into training.
    """

    name = "runstream"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, *, run: Run | None = None, **init_kwargs: Any) -> None:
        super().__init__()
        self._runs = LazyRun(type(self).__name__, init_kwargs, run)

    @property
    def tracker(self) -> Run | None:
        """The run (``accelerator.get_tracker("runstream", unwrap=True)``): None before it
        started and on processes that do not log."""
        return self._runs.run

    @_main_process
    def start(self) -> None:
        """Start the run (accelerate calls it in ``init_trackers``); a new one if this
        tracker's earlier run has finished."""
        self._start(new=True)

    @_main_process
    def store_init_configuration(self, values: Mapping[str, Any]) -> None:
        """Record ``values`` (``init_trackers(config=...)``) in the run's config, as they are:
        what is not JSON is stored as the SDK says (docs/sdk.md), with one warning."""
        run = self._start(new=False)
        if run is not None and values:
            run.config.update(values)

    @_main_process
    @guarded
    def log(self, values: Mapping[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """``run.log(values, step=step, **kwargs)``: at accelerate's ``step``; without one, one
        past the highest step so far (``run.log``'s rule). ``kwargs`` are
        ``accelerator.log(..., log_kwargs={"runstream": {...}})``, e.g. ``commit``."""
        run = self._start(new=False)
        if run is not None:
            run.log(values, step=step, **kwargs)

    @_main_process
    @guarded
    def finish(self) -> None:
        """End the run (``accelerator.end_training()``): ``finished``, or with the status of
        the exception in flight when called from a ``finally:``/``except:`` block."""
        self._runs.end(in_flight())

    def _start(self, new: bool) -> Run | None:
        if self._runs.open is not None and not new:
            return self._runs.open
        return self._runs.get(self._from_init_trackers(), new=new)

    def _from_init_trackers(self) -> dict[str, Any]:
        """``init`` arguments from the ``accelerator.init_trackers(...)`` call this runs in:
        ``init_kwargs["runstream"]`` over ``project=project_name``. Empty outside that call."""
        from accelerate import Accelerator

        found = find_caller_self(("init_trackers",), Accelerator)
        if found is None:
            return {}
        call = found[1].f_locals
        given = (call.get("init_kwargs") or {}).get(self.name) or {}
        if not isinstance(given, Mapping):
            raise TypeError(
                f'init_trackers(init_kwargs={{"{self.name}": ...}}) must be a dict of '
                f"runstream.init's keyword arguments, not a {type(given).__name__}"
            )
        if self._runs.owned:
            given = check_arguments(f'init_trackers(init_kwargs={{"{self.name}": ...}})', given,
                                    None)  # fmt: skip
        elif given:
            logger.warning(
                "runstream: RunstreamTracker was given run=, so init_kwargs[%r] (%s) do not "
                "apply to it",
                self.name,
                ", ".join(sorted(given)),
            )
            return {}
        project = call.get("project_name")
        return {**({"project": project} if project is not None else {}), **given}


__all__ = ["RunstreamTracker"]
