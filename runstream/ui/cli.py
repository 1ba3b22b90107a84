"""``runstream ui``: serve the web UI with uvicorn."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Callable
from typing import Any

from runstream.deploy.local.ports import is_loopback
from runstream.errors import RunstreamError
from runstream.settings import Settings


def ui_address(host: str, port: int) -> str:
    """The UI's address as a browser opens it (an IPv6 host in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


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
    ui.add_argument(
        "--host", dest="ui_host", help="address to bind (default: $RUNSTREAM_UI_HOST or 127.0.0.1)"
    )
    ui.add_argument(
        "--port", dest="ui_port", type=int, help="port (default: $RUNSTREAM_UI_PORT or 8080)"
    )
    ui.add_argument(
        "--token",
        dest="ui_token",
        help="require this token (bearer, basic-auth password or ?token=); "
        "default: $RUNSTREAM_UI_TOKEN",
    )
    ui.set_defaults(handler=run_ui)


def run_ui(args: argparse.Namespace, settings: Settings) -> int:
    from runstream._extras import require

    uvicorn = require("uvicorn", part="the web UI", extra="ui")
    from runstream.ui import create_app

    host, port = settings.ui_host, settings.ui_port
    token = settings.ui_token.get_secret_value() if settings.ui_token else None
    if not is_loopback(host) and token is None:
        print(
            f"runstream ui: warning: serving on {host} without a token: anyone who reaches "
            "this port reads every run. Set --token or $RUNSTREAM_UI_TOKEN.",
            file=sys.stderr,
        )
    _check_free(host, port)
    app = create_app(settings, token=token)
    print(f"runstream ui: {ui_address(host, port)}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
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
                    "(runstream dev up: RUNSTREAM_UI_PORT=...)"
                ) from None
            raise RunstreamError(f"cannot bind {host}:{port}: {exc.strerror}") from None
