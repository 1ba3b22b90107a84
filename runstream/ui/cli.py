"""``runstream ui``: serve the web UI with uvicorn."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from runstream.deploy.local.ports import is_loopback
from runstream.errors import RunstreamError
from runstream.settings import Settings

TOKEN_ENV = "RUNSTREAM_UI_TOKEN"
PORT_ENV = "RUNSTREAM_UI_PORT"
DEFAULT_PORT = 8080


def ui_port() -> int:
    """The port ``runstream ui`` (and the UI worker of ``runstream dev up``) binds by default:
    ``$RUNSTREAM_UI_PORT``, else 8080."""
    raw = os.environ.get(PORT_ENV, "")
    try:
        return int(raw) if raw else DEFAULT_PORT
    except ValueError:
        raise RunstreamError(f"{PORT_ENV} must be a port number, not {raw!r}") from None


def ui_address(host: str = "127.0.0.1", port: int | None = None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{ui_port() if port is None else port}/"


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
    ui.add_argument(
        "--port", type=int, default=None, help=f"port (default: ${PORT_ENV} or {DEFAULT_PORT})"
    )
    ui.add_argument(
        "--token",
        default=None,
        help=f"require this token (bearer, basic-auth password or ?token=); default: ${TOKEN_ENV}",
    )
    ui.set_defaults(handler=run_ui)


def run_ui(args: argparse.Namespace, settings: Settings) -> int:
    from runstream._extras import require

    uvicorn = require("uvicorn", part="the web UI", extra="ui")
    from runstream.ui import create_app

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and token is None:
        print(
            f"runstream ui: warning: serving on {args.host} without a token: anyone who reaches "
            f"this port reads every run. Set --token or ${TOKEN_ENV}.",
            file=sys.stderr,
        )
    port = ui_port() if args.port is None else args.port
    _check_free(args.host, port)
    app = create_app(settings, token=token)
    print(f"runstream ui: {ui_address(args.host, port)}", flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level="warning")
    return 0


def _check_free(host: str, port: int) -> None:
    """A taken port said plainly (uvicorn would log an errno and exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RunstreamError(
                    f"port {port} on {host} is in use: choose another with --port "
                    f"(runstream dev up: {PORT_ENV}=...)"
                ) from None
            raise RunstreamError(f"cannot bind {host}:{port}: {exc.strerror}") from None
