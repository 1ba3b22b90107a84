"""The launcher's side of the local ClickHouse: paths, command line, health, stop.

The server itself is :mod:`runstream.deploy.local.clickhouse_server`, run as its own process
because chdb serves one ClickHouse per process and blocks the thread that serves it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import urllib.request

from runstream._extras import require_installed
from runstream.deploy.local import clickhouse_server, reader_user
from runstream.deploy.local.processes import terminate, wait_gone
from runstream.settings import Settings

# The native protocol listens next to HTTP, at the distance of ClickHouse's own defaults
# (HTTP 8123, native 9000), so one setting moves both.
TCP_PORT_OFFSET = 9000 - 8123
_TCP_PORT = re.compile(r"<tcp_port>(\d+)</tcp_port>")


class ClickHouseLayout:
    """Where the local ClickHouse keeps data, configuration and log, and how to run it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host, self.http_port = settings.clickhouse_host_port
        self.data = settings.home / "clickhouse" / "data"
        self.run_dir = settings.home / "run" / "clickhouse"  # config.xml and the stop FIFO
        self.log = settings.home / "logs" / "clickhouse.log"

    @property
    def derived_tcp_port(self) -> int:
        """The native protocol port that goes with the HTTP port (0 when out of range)."""
        port = self.http_port + TCP_PORT_OFFSET
        return port if 0 < port <= 65535 else 0

    def serving_tcp_port(self) -> int:
        """The native port of the running server (0: HTTP only), from its config.xml."""
        try:
            match = _TCP_PORT.search((self.run_dir / clickhouse_server.CONFIG).read_text())
        except OSError:
            return 0
        return int(match.group(1)) if match else 0

    # --- preconditions ------------------------------------------------------------------------
    def require_engine(self) -> None:
        # A presence check only: the engine is imported by the server process, not by `dev up`.
        require_installed("chdb", part="runstream dev (its ClickHouse server)", extra="local")

    def data_locked_by(self) -> str | None:
        """Who holds the data directory's lock (clickhouse's ``status`` file), or None."""
        status = self.data / "status"
        try:
            fd = os.open(status, os.O_RDONLY)
        except OSError:
            return None  # never started: nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # The server writes its pid into the file it locks.
            with contextlib.suppress(OSError):
                match = re.search(r"PID:\s*(\d+)", status.read_text(errors="replace"))
                if match:
                    return f"process {match.group(1)}"
            return "another process"
        finally:
            os.close(fd)  # also releases the lock this check may have taken
        return None

    def prepare_users(self) -> dict[str, str]:
        """Write the users configuration (``default`` and the reader, :mod:`.reader_user`) into
        the run directory; the environment the server needs for it (the reader's password)."""
        reader_user.write_users_config(self.run_dir, self.settings.clickhouse_database)
        return {reader_user.PASSWORD_ENV: reader_user.ensure_password(self.settings.home)}

    def argv(self, tcp_port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "runstream.deploy.local.clickhouse_server",
            "--data-dir",
            str(self.data),
            "--run-dir",
            str(self.run_dir),
            "--host",
            self.host,
            "--http-port",
            str(self.http_port),
            "--tcp-port",
            str(tcp_port),
            "--users-config",
            str(self.run_dir / reader_user.USERS_XML),
        ]

    # --- health and stop ------------------------------------------------------------------------
    def healthy(self) -> bool:
        try:
            url = self.settings.clickhouse_url + "/ping"
            with urllib.request.urlopen(url, timeout=2) as response:
                # The body tells ClickHouse from any other HTTP server on that port.
                return bool(response.status == 200 and response.read(16).startswith(b"Ok."))
        except OSError:
            return False

    def stop(self, pid: int, timeout: float) -> None:
        """The FIFO first (a clean shutdown), signals when the server does not react."""
        if clickhouse_server.stop(self.run_dir) and wait_gone(pid, timeout):
            return
        terminate([pid], timeout)
