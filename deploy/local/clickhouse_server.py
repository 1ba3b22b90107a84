"""A ClickHouse 26.9 server on loopback, served from the chdb-core wheel.

    python -m runstream.deploy.local.clickhouse_server --data-dir D --run-dir R \
        --http-port 8123 [--tcp-port 9000]

chdb-core carries the whole clickhouse-local program, which can open real HTTP/TCP listeners.
``chdb._chdb.query`` runs that program's main, reading ``config.xml`` from the current directory;
``SYSTEM START LISTEN HTTP`` opens the listeners, then a statement that reads a FIFO blocks and
keeps them serving until a line is written to the FIFO (``stop``), after which the server
shuts down cleanly. This relies on chdb internals: chdb-core is pinned to 26.9.0 and the launcher
is covered by the test suite.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from xml.sax.saxutils import escape

STOP_FIFO = "stop.fifo"


def write_config(run_dir: Path, host: str, http_port: int, tcp_port: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tcp = f"  <tcp_port>{tcp_port}</tcp_port>\n" if tcp_port else ""
    (run_dir / "config.xml").write_text(
        "<clickhouse>\n"
        f"  <listen_host>{escape(host)}</listen_host>\n"
        f"  <http_port>{http_port}</http_port>\n"
        f"{tcp}"
        "</clickhouse>\n",
        encoding="utf-8",
    )


def stop(run_dir: Path) -> bool:
    """Ask a running server to shut down cleanly; False when nobody reads the FIFO."""
    fifo = run_dir / STOP_FIFO
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader, FileNotFoundError: never started
        return False
    try:
        os.write(fd, b"stop\n")
    finally:
        os.close(fd)
    return True


def serve(data_dir: Path, run_dir: Path, host: str, http_port: int, tcp_port: int) -> int:
    import chdb._chdb as engine  # chdb-core: the "local" extra

    write_config(run_dir, host, http_port, tcp_port)
    data_dir.mkdir(parents=True, exist_ok=True)
    fifo = run_dir / STOP_FIFO
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)
    os.chdir(run_dir)  # clickhouse-local reads ./config.xml
    quoted = str(fifo.resolve()).replace("\\", "\\\\").replace("'", "\\'")
    listen = "SYSTEM START LISTEN HTTP; " + ("SYSTEM START LISTEN TCP; " if tcp_port else "")
    sql = (
        f"{listen}"
        f"SELECT count() FROM file('{quoted}', 'LineAsString') "
        "SETTINGS storage_file_read_method = 'read'"
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result = engine.query(sql, "TSV", path=str(data_dir.resolve()))  # type: ignore[attr-defined]
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
    server = threading.Thread(target=run, name="clickhouse")
    server.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop(run_dir))
    while server.is_alive():
        server.join(0.5)
    fifo.unlink(missing_ok=True)
    if failure:
        print(f"clickhouse server failed: {failure[0]}", file=sys.stderr, flush=True)
        return 1
    print("clickhouse server stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve ClickHouse (chdb-core) over HTTP and TCP.")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8123)
    parser.add_argument("--tcp-port", type=int, default=0, help="native protocol port; 0: off")
    args = parser.parse_args(argv)
    return serve(args.data_dir, args.run_dir, args.host, args.http_port, args.tcp_port)


if __name__ == "__main__":
    raise SystemExit(main())
