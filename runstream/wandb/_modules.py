"""The wandb submodules libraries import, as small modules of the shim: ``wandb.sdk``,
``wandb.sdk.lib`` (``RunDisabled``, ``config_util.ConfigError``), ``wandb.sdk.wandb_run`` and
``wandb.wandb_run`` (``Run``), ``wandb.sdk.wandb_settings`` (``Settings``), ``wandb.util``,
``wandb.env``, ``wandb.errors``, ``wandb.apis`` and ``wandb.apis.public`` (``Api``).

What each holds is what transformers 5.23 (``integrations/integration_utils.py``), accelerate
1.15 (``tracking.py``) and Lightning 2.6 (``loggers/wandb.py``) import from them, plus the
helpers wandb scripts use most (``util.generate_id``, ``errors.Error``). ``runstream.wandb.install``
puts them in ``sys.modules`` under their wandb names.
"""

from __future__ import annotations

import importlib.machinery
import os
import secrets
import string
import types
from typing import Any

from runstream.errors import RunstreamError
from runstream.producers.run import Run
from runstream.producers.start import DisabledRun


def _module(name: str, doc: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    # importlib.util.find_spec(name) reads __spec__ of a module in sys.modules (None: ValueError).
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    return module


# --- wandb.errors ---------------------------------------------------------------------------
class Error(RunstreamError):
    """``wandb.errors.Error``: the base of the errors the shim raises as wandb would."""


class UsageError(Error):
    """``wandb.errors.UsageError``: a call wandb refuses (``define_metric`` before ``init``)."""


class CommError(Error):
    """``wandb.errors.CommError``: never raised (runstream spools what it cannot send)."""


class ConfigError(Error):
    """``wandb.sdk.lib.config_util.ConfigError``: never raised (every config change is kept)."""


errors = _module(
    "wandb.errors", "wandb.errors on runstream.", Error=Error, UsageError=UsageError,
    CommError=CommError,
)  # fmt: skip


# --- wandb.util -----------------------------------------------------------------------------
_ID_ALPHABET = string.ascii_lowercase + string.digits


def generate_id(length: int = 8) -> str:
    """A random run id of ``length`` lowercase letters and digits, as wandb's."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


util = _module("wandb.util", "wandb.util on runstream.", generate_id=generate_id)


# --- wandb.env ------------------------------------------------------------------------------
def set_project(value: str, env: dict[str, str] | None = None) -> None:
    (os.environ if env is None else env)["WANDB_PROJECT"] = value


def set_entity(value: str, env: dict[str, str] | None = None) -> None:
    (os.environ if env is None else env)["WANDB_ENTITY"] = value


env = _module(
    "wandb.env", "wandb.env on runstream: the environment variables the shim reads.",
    set_project=set_project, set_entity=set_entity, MODE="WANDB_MODE", PROJECT="WANDB_PROJECT",
    NAME="WANDB_NAME", RUN_ID="WANDB_RUN_ID", DIR="WANDB_DIR", TAGS="WANDB_TAGS",
    NOTES="WANDB_NOTES", DISABLED="WANDB_DISABLED", ENTITY="WANDB_ENTITY",
)  # fmt: skip

# --- wandb.sdk and below --------------------------------------------------------------------
config_util = _module(
    "wandb.sdk.lib.config_util", "wandb.sdk.lib.config_util on runstream.", ConfigError=ConfigError
)
sdk_lib = _module(
    "wandb.sdk.lib", "wandb.sdk.lib on runstream.", RunDisabled=DisabledRun,
    config_util=config_util,
)  # fmt: skip
wandb_run = _module("wandb.wandb_run", "wandb.wandb_run on runstream.", Run=Run)
sdk_wandb_run = _module("wandb.sdk.wandb_run", "wandb.sdk.wandb_run on runstream.", Run=Run)
sdk_wandb_settings = _module("wandb.sdk.wandb_settings", "wandb.sdk.wandb_settings on runstream.")
sdk = _module(
    "wandb.sdk", "wandb.sdk on runstream.", lib=sdk_lib, wandb_run=sdk_wandb_run,
    wandb_settings=sdk_wandb_settings,
)  # fmt: skip


# --- wandb.apis.public (the public API: wandb.Api) -------------------------------------------
def _public_api() -> tuple[types.ModuleType, types.ModuleType]:
    from runstream.wandb import public

    apis_public = _module(
        "wandb.apis.public", "wandb.apis.public on runstream (docs/wandb.md, wandb.Api).",
        Api=public.Api, Run=public.Run, Runs=public.Runs,
    )  # fmt: skip
    apis = _module(
        "wandb.apis", "wandb.apis on runstream.", public=apis_public, PublicApi=public.Api
    )
    return apis, apis_public


apis, apis_public = _public_api()

SUBMODULES: dict[str, types.ModuleType] = {
    "wandb.sdk": sdk,
    "wandb.sdk.lib": sdk_lib,
    "wandb.sdk.lib.config_util": config_util,
    "wandb.sdk.wandb_run": sdk_wandb_run,
    "wandb.sdk.wandb_settings": sdk_wandb_settings,
    "wandb.wandb_run": wandb_run,
    "wandb.util": util,
    "wandb.env": env,
    "wandb.errors": errors,
    "wandb.apis": apis,
    "wandb.apis.public": apis_public,
}
"""Every submodule ``install()`` registers, by its wandb name."""
