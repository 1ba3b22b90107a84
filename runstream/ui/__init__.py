"""runstream's web UI: ``runstream ui`` serves it; :func:`create_app` is the ASGI app.

Needs the ``ui`` extra (Starlette, uvicorn). docs/ui.md says how to run it and what it shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from runstream.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, token: str | None = None) -> Starlette:
    """The UI as a Starlette app (runstream/ui/app.py); raises MissingExtraError without the
    ``ui`` extra."""
    from runstream._extras import require

    require("starlette", part="the web UI", extra="ui")
    from runstream.ui.app import create_app as create

    return create(settings, token)
