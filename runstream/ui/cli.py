"""``runstream ui``: serve the web UI with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable
from typing import Any

from runstream.settings import Settings

TOKEN_ENV = "RUNSTREAM_UI_TOKEN"


def add_ui_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``runstream ui`` on the CLI's sub-parsers."""
    ui = sub.add_parser(
        "ui",
        help="serve the web UI (runs, charts, compare, alerts, SQL) on http://127.0.0.1:8080",
        description="Serve the read-only web UI. It binds to 127.0.0.1 unless told otherwise; "
        "on a shared host give it a token (--token or RUNSTREAM_UI_TOKEN) and open "
        "http://HOST:PORT/?token=TOKEN once. docs/ui.md.",
    )
    add_common(ui)
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    ui.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    ui.add_argument(
        "--token",
        default=None,
        help=f"require this token (bearer, basic-auth password or ?token=); default: ${TOKEN_ENV}",
    )
    ui.set_defaults(handler=run_ui)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_ui(args: argparse.Namespace, settings: Settings) -> int:
    from runstream._extras import require

    uvicorn = require("uvicorn", part="the web UI", extra="ui")
    from runstream.ui import create_app

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not _loopback(args.host) and token is None:
        print(
            f"runstream ui: warning: serving on {args.host} without a token: anyone who reaches "
            f"this port reads every run. Set --token or ${TOKEN_ENV}.",
            file=sys.stderr,
        )
    app = create_app(settings, token=token)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"runstream ui: http://{shown}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
