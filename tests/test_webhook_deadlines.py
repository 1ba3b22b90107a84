"""One deadline per webhook attempt (issue 10, item 12), and HTTPS through the checked address.

Real receivers on loopback: raw sockets that trickle, stall or read slowly, and a TLS server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runstream.processors import webhooks
from runstream.processors.webhooks import deliver
from tests.test_webhooks import Sleeps, hook, make_alert

# --- (4b) one deadline per attempt, whatever the receiver does (issue 10, item 12) ------------


class SlowServer:
    """A TCP server on loopback whose every connection runs ``behave(conn, stop)``."""

    def __init__(self, behave: Callable[[socket.socket, threading.Event], None]) -> None:
        self.stop = threading.Event()
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []

        def serve() -> None:
            while not self.stop.is_set():
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self.connections += 1
                thread = threading.Thread(target=self._run, args=(behave, conn), daemon=True)
                self.threads.append(thread)
                thread.start()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def _run(
        self, behave: Callable[[socket.socket, threading.Event], None], conn: socket.socket
    ) -> None:
        # OSError: the client gave up, which is the point.
        with conn, contextlib.suppress(OSError):
            behave(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(5)
        for thread in self.threads:
            thread.join(5)


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def trickle_headers(conn: socket.socket, stop: threading.Event) -> None:
    _read_request(conn)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
        if stop.wait(1.0):
            return
        conn.sendall(bytes([byte]))


def trickle_body(conn: socket.socket, stop: threading.Event) -> None:
    _read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        if stop.wait(1.0):
            return
        conn.sendall(b"x")


def never_answer(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(30)


def read_slowly(conn: socket.socket, stop: threading.Event) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    data = b""
    while b"\r\n\r\n" not in data and not stop.wait(0.5):
        data += conn.recv(1)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("behave", "scheme"),
    [
        (trickle_headers, "http"),
        (trickle_body, "http"),
        (never_answer, "http"),
        (never_answer, "https"),  # stuck in the TLS handshake
        (read_slowly, "http"),
    ],
)
def test_an_attempt_ends_at_its_deadline_whatever_the_receiver_does(
    behave: Callable[[socket.socket, threading.Event], None], scheme: str
) -> None:
    server = SlowServer(behave)
    try:
        timeout, attempts = 1.0, 2
        webhook = hook(f"{scheme}://127.0.0.1:{server.port}/", timeout=timeout,
                       max_attempts=attempts)  # fmt: skip
        durations: list[float] = []
        delivery = webhooks.Delivery(webhook, make_alert())
        outcome: webhooks.DeliveryResult | float = 0.0
        while not isinstance(outcome, webhooks.DeliveryResult):
            started = time.monotonic()
            outcome = delivery.attempt()
            durations.append(time.monotonic() - started)
        # One deadline for the whole exchange: each attempt ends at it, give or take the
        # scheduling of a busy machine, and counts as a timeout that is retried.
        assert len(durations) == attempts, durations
        assert all(timeout - 0.05 <= d < timeout + 0.5 for d in durations), durations
        assert not outcome.delivered and outcome.dead_letter and outcome.status is None
        assert outcome.error == f"timed out after {timeout}s"
        assert server.connections == attempts
    finally:
        server.close()


def test_a_receiver_that_answers_in_time_is_not_cut_off() -> None:
    def quick(conn: socket.socket, stop: threading.Event) -> None:
        _read_request(conn)
        stop.wait(0.3)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = SlowServer(quick)
    try:
        result = deliver(hook(f"http://127.0.0.1:{server.port}/", timeout=1.0), make_alert())
        assert result.delivered and result.attempts == 1
    finally:
        server.close()


# --- HTTPS -------------------------------------------------------------------------------------


@pytest.fixture
def tls_receiver(tmp_path: Any) -> Iterator[tuple[str, str]]:
    """An HTTPS endpoint on loopback with a self-signed certificate: (url, certificate path)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/hook", str(cert)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_https_delivers_to_the_checked_address_and_verifies_the_certificate(
    tls_receiver: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    from runstream.processors import webhook_http

    url, cert = tls_receiver
    # Not trusted by the system: refused for good, not retried.
    monkeypatch.setattr(webhook_http, "_tls_context", None)
    result = deliver(hook(url), make_alert(), sleep=Sleeps())
    assert result.dead_letter and result.attempts == 1
    assert result.error.startswith("TLS certificate rejected")
    # Trusted: delivered over the connection made to the checked address.
    monkeypatch.setattr(webhook_http, "_tls_context", ssl.create_default_context(cafile=cert))
    assert deliver(hook(url), make_alert(), sleep=Sleeps()).delivered
