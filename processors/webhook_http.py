"""One webhook POST under one deadline: resolve, connect, TLS, send, response headers and body.

A socket timeout bounds each read, not the exchange: a receiver that sends one byte a second
never trips it, and held a delivery for 85 s with a 3 s timeout. Here every attempt gets one
deadline (``timeout`` seconds from its start). Each blocking step also gets what is left of it as
its own socket timeout, and a watchdog thread shuts the socket down when the deadline passes,
which ends whatever read or write is blocked on it (a trickled header, a body, a TLS handshake,
a receiver that reads the request slowly). The attempt then counts as a timeout.

Connections go to the addresses :func:`~runstream.processors.webhook_addresses.resolve`
checked, not to the name (DNS rebinding); no proxies from the environment, no redirects.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import math
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from runstream.processors.webhook_addresses import SockAddr, Target, WebhookURLError, resolve
from runstream.processors.webhook_payload import clip

# Enough of a response body to show a receiver's complaint; the rest is not read at all.
MAX_RESPONSE_BYTES = 4096
_ERROR_SNIPPET = 120


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    status: int | None = None
    error: str = ""
    retryable: bool = False
    retry_after: float | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Alarm:
    """A socket to shut down at a deadline, unless disarmed first."""

    __slots__ = ("deadline", "done", "fired", "lock", "sock")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self.done = False
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None

    def watch(self, sock: socket.socket) -> None:
        with self.lock:
            self.sock = sock
            if self.fired:
                _shutdown(sock)

    def disarm(self) -> None:
        # Under the lock, so the watchdog never shuts down a socket that was closed (whose file
        # descriptor may already belong to another connection).
        with self.lock:
            self.done = True
            self.sock = None

    def fire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.fired = True
            if self.sock is not None:
                _shutdown(self.sock)


def _shutdown(sock: socket.socket) -> None:
    # socket.socket's own shutdown, also for an SSLSocket: SSLSocket.shutdown would drop its
    # TLS object under the thread that is reading through it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread for every attempt's deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> _Alarm:
        alarm = _Alarm(deadline)
        with self._wake:
            heapq.heappush(self._heap, (deadline, next(self._counter), alarm))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="webhook-deadlines", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(wait)
                _, _, alarm = heapq.heappop(self._heap)
            alarm.fire()


_watchdog = _Watchdog()

_tls_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _tls_context
    if _tls_context is None:
        _tls_context = ssl.create_default_context()
    return _tls_context


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _connect(addresses: list[SockAddr], alarm: _Alarm) -> socket.socket:
    """A connection to the first of ``addresses`` that answers."""
    error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            alarm.watch(sock)
            sock.settimeout(_left(alarm.deadline))
            sock.connect(sockaddr)
            return sock
        except OSError as exc:  # TimeoutError included
            sock.close()
            if alarm.fired or isinstance(exc, TimeoutError):
                raise TimeoutError from exc
            error = exc
    assert error is not None
    raise error


def post(
    where: Target,
    *,
    timeout: float,
    allow_private: bool,
    body: bytes,
    headers: Mapping[str, str],
    display_url: str,
) -> Attempt:
    """One POST of ``body``, ended at ``timeout`` seconds whatever the receiver does.

    Classifies every HTTP and network outcome; raises for nothing else.
    """
    deadline = time.monotonic() + timeout
    try:
        addresses = resolve(where, allow_private, timeout)
    except WebhookURLError as exc:
        return Attempt(error=f"refused: {exc}")
    except TimeoutError:
        return Attempt(error=_timed_out(timeout), retryable=True, timed_out=True)
    except OSError:  # socket.gaierror
        return Attempt(error=f"cannot resolve {where.host}", retryable=True)

    alarm = _watchdog.arm(deadline)
    sock: socket.socket | None = None
    try:
        sock = _connect(addresses, alarm)
        if where.scheme == "https":
            sock.settimeout(_left(deadline))
            sock = _tls().wrap_socket(sock, server_hostname=where.host)
            alarm.watch(sock)
        connection: http.client.HTTPConnection
        if where.scheme == "https":
            connection = http.client.HTTPSConnection(where.host, where.port, context=_tls())
        else:
            connection = http.client.HTTPConnection(where.host, where.port)
        connection.sock = sock  # http.client connects only when it has no socket
        sock.settimeout(_left(deadline))
        connection.request("POST", where.path, body=body, headers=dict(headers))
        sock.settimeout(_left(deadline))
        response = connection.getresponse()
        sock.settimeout(_left(deadline))
        answer = response.read(MAX_RESPONSE_BYTES)
        if alarm.fired:
            raise TimeoutError
        return classify(response.status, response.getheader("Retry-After"), answer, display_url)
    except Exception as exc:
        if alarm.fired or isinstance(exc, TimeoutError):
            return Attempt(error=_timed_out(timeout), retryable=True, timed_out=True)
        return _network_error(exc)
    finally:
        alarm.disarm()
        if sock is not None:
            sock.close()


def _timed_out(timeout: float) -> str:
    return f"timed out after {timeout}s"


def _network_error(exc: Exception) -> Attempt:
    if isinstance(exc, ConnectionRefusedError):
        return Attempt(error="connection refused", retryable=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        # A certificate that does not verify will not verify in a minute either.
        return Attempt(error=f"TLS certificate rejected: {exc.verify_message or exc.reason}")
    if isinstance(exc, ssl.SSLError):
        return Attempt(error=f"TLS error: {exc.reason or exc}", retryable=True)
    if isinstance(exc, http.client.RemoteDisconnected):
        return Attempt(error="connection closed without an answer", retryable=True)
    if isinstance(exc, ConnectionResetError):
        return Attempt(error="connection reset", retryable=True)
    if isinstance(exc, http.client.HTTPException):
        return Attempt(error=f"bad HTTP answer: {type(exc).__name__}", retryable=True)
    if isinstance(exc, OSError):
        return Attempt(error=f"network error: {exc.strerror or exc}", retryable=True)
    # Anything else (a ValueError from a malformed answer, ...) is still this receiver's answer.
    return Attempt(error=f"bad answer: {type(exc).__name__}: {exc}", retryable=True)


def classify(status: int, retry_after: str | None, answer: bytes, display_url: str) -> Attempt:
    if 200 <= status < 300:
        return Attempt(status=status)
    error = f"HTTP {status} from {display_url}"
    snippet = " ".join(answer.decode("utf-8", "replace").split())
    if snippet:
        error += ": " + clip(snippet, _ERROR_SNIPPET)
    if 300 <= status < 400:
        return Attempt(status=status, error=error + " (redirects are not followed)")
    # 408 is a timeout the receiver noticed first; 429 and 5xx are the receiver's own trouble.
    retryable = status in (408, 429) or status >= 500
    return Attempt(status, error, retryable, parse_retry_after(retry_after) if retryable else None)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
