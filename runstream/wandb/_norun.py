"""What a wandb call that needs ``wandb.run`` does without one: wandb raises
(``wandb.Error: You must call wandb.init() before ...``); the shim never raises into the user's
code, so the call is ignored, warned about once per call, and counted in
``runstream.no_run_calls`` under ``wandb.<call>`` (as the SDK counts ``runstream.log`` without
a run).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("runstream")


def no_run(call: str) -> None:
    """Count ``wandb.<call>()`` made with no run; warn the first time."""
    import runstream

    key = f"wandb.{call}"
    count = runstream.no_run_calls.get(key, 0)
    runstream.no_run_calls[key] = count + 1
    if count == 0:
        logger.warning(
            "runstream.wandb: %s() with no run: call wandb.init() first; ignored (warned once, "
            "counted in runstream.no_run_calls[%r])",
            key,
            key,
        )
