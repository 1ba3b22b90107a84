"""A ClickHouse 26.9 server on loopback, served from the chdb-core wheel.

    python -m runstream.deploy.local.clickhouse_server --data-dir D --run-dir R \
        --http-port 8123 [--tcp-port 9000]

chdb-core carries the whole clickhouse-local program, which can open real HTTP/TCP listeners.
``chdb._chdb.query`` runs that program's main, reading ``config.xml`` from the current directory;
``SYSTEM START LISTEN HTTP`` opens the listeners, then a statement that reads a FIFO blocks and
keeps them serving until a line is written to the FIFO (:func:`stop`), after which the server
shuts down cleanly. SIGTERM and SIGINT do the same. This relies on chdb internals: chdb-core is
pinned to 26.9.0 (the ``local`` extra) and the launcher is covered by the test suite.

The user ``default`` has no password and ``file()`` reads any path the process can: listen on
loopback only. ``--users-config`` names the users configuration (``<users_config>``; see
:mod:`.reader_user`, which writes it with the read-only ``runstream_reader``); without it
clickhouse-local knows ``default`` only.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from xml.sax.saxutils import escape

STOP_FIFO = "stop.fifo"
CONFIG = "config.xml"


def write_config(
    run_dir: Path, host: str, http_port: int, tcp_port: int, users_config: Path | None = None
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tcp = f"  <tcp_port>{tcp_port}</tcp_port>\n" if tcp_port else ""
    users = f"  <users_config>{escape(str(users_config))}</users_config>\n" if users_config else ""
    (run_dir / CONFIG).write_text(
        "<clickhouse>\n"
        f"  <listen_host>{escape(host)}</listen_host>\n"
        f"  <http_port>{http_port}</http_port>\n"
        f"{tcp}"
        f"{users}"
        "</clickhouse>\n",
        encoding="utf-8",
    )


def stop(run_dir: Path) -> bool:
    """Ask a running server to shut down cleanly; False when nobody reads its FIFO (yet)."""
    try:
        fd = os.open(run_dir / STOP_FIFO, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet or any more; FileNotFoundError: never started
        return False
    try:
        os.write(fd, b"stop\n")
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def serve(
    data_dir: Path,
    run_dir: Path,
    host: str,
    http_port: int,
    tcp_port: int,
    *,
    users_config: Path | None = None,
) -> int:
    from runstream._extras import require

    engine = require("chdb._chdb", part="runstream dev (its ClickHouse server)", extra="local")

    data_dir = data_dir.resolve()
    run_dir = run_dir.resolve()
    if users_config is not None:
        users_config = users_config.resolve()  # the server runs from run_dir
    write_config(run_dir, host, http_port, tcp_port, users_config)
    data_dir.mkdir(parents=True, exist_ok=True)
    fifo = run_dir / STOP_FIFO
    fifo.unlink(missing_ok=True)  # a FIFO left by a server that was killed
    os.mkfifo(fifo)
    os.chdir(run_dir)  # clickhouse-local reads ./config.xml
    quoted = str(fifo).replace("\\", "\\\\").replace("'", "\\'")
    listen = "SYSTEM START LISTEN HTTP; " + ("SYSTEM START LISTEN TCP; " if tcp_port else "")
    sql = (
        f"{listen}"
        f"SELECT count() FROM file('{quoted}', 'LineAsString') "
        "SETTINGS storage_file_read_method = 'read'"
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result = engine.query(sql, "TSV", path=str(data_dir))
        except BaseException as exc:
            failure.append(exc)
            return
        # A clean stop reads the line written to the FIFO, so the count is 1. Start-up errors
        # (a locked data directory, a port in use) are printed by clickhouse-local, which then
        # returns an empty result without raising.
        if not bytes(result.bytes()).strip():
            failure.append(RuntimeError("ClickHouse did not start; see the messages above"))

    # The query blocks inside C code, where Python signal handlers cannot run; it runs in a
    # thread so that the main thread can turn SIGTERM/SIGINT into a clean stop via the FIFO.
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    server = threading.Thread(target=run, name="clickhouse")
    server.start()
    asked = False
    while server.is_alive():
        # A signal that arrives before the query opened the FIFO finds no reader: keep asking.
        if stopping.is_set() and not asked:
            asked = stop(run_dir)
        server.join(0.2)
    fifo.unlink(missing_ok=True)
    if failure:
        print(f"clickhouse server failed: {failure[0]}", file=sys.stderr, flush=True)
        return 1
    print("clickhouse server stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve ClickHouse (chdb-core) over HTTP and TCP.")
    parser.add_argument("--data-dir", type=Path, required=True, help="ClickHouse's data")
    parser.add_argument(
        "--run-dir", type=Path, required=True, help="where config.xml and the stop FIFO go"
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (keep it loopback)")
    parser.add_argument("--http-port", type=int, default=8123)
    parser.add_argument("--tcp-port", type=int, default=0, help="native protocol port; 0: off")
    parser.add_argument(
        "--users-config", type=Path, default=None, help="users.xml (default: user default only)"
    )
    args = parser.parse_args(argv)
    print(
        f"clickhouse server (pid {os.getpid()}) starting: http {args.host}:{args.http_port}, "
        f"tcp {args.tcp_port or 'off'}, data {args.data_dir}",
        flush=True,
    )
    from runstream.errors import RunstreamError

    try:
        return serve(
            args.data_dir,
            args.run_dir,
            args.host,
            args.http_port,
            args.tcp_port,
            users_config=args.users_config,
        )
    except RunstreamError as exc:  # e.g. chdb-core missing: its message says what to install
        print(f"clickhouse server failed: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
