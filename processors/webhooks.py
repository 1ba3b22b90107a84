"""Webhook delivery of alerts: one signed JSON POST per alert version, retried, dead-lettered.

The notifier calls :func:`deliver` (synchronous; it runs deliveries in a thread pool) for every
configured :class:`Webhook` and every alert version that needs telling: once when the episode
fires, once when it resolves. :func:`deliver` never raises for HTTP or network trouble; it returns
a :class:`DeliveryResult` that the notifier writes back as the alert's delivery state
(``delivered``, or ``failed`` plus :func:`dead_letter_record` on the dead-letter topic).

Payload (``format="runstream"``)
--------------------------------
A JSON object (UTF-8): ``version`` (of this payload, now 1), ``event`` (``alert.fired`` or
``alert.resolved``) and the episode's fields. ``value`` is a number, null, or one of the strings
``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (a NaN loss is a common reason to alert). Times are
ISO 8601 in UTC; ``resolved_at`` is null while the alert fires. Example::

    {
      "version": 1,
      "event": "alert.fired",
      "alert_id": "0b6f3a52-7d1e-5c2a-9f4e-3c8d2a1b6e90",
      "rule": "loss-is-nan",
      "project": "vision",
      "run_id": "resnet-42",
      "metric": "train/loss",
      "value": "NaN",
      "step": 1200,
      "level": "error",
      "title": "train/loss is NaN",
      "text": "train/loss became NaN at step 1200.",
      "fired_at": "2024-06-01T12:34:56Z",
      "resolved_at": null
    }

Receivers should ignore fields they do not know: later versions of runstream may add some
(``version`` changes only when a field changes meaning or disappears). ``format="slack"`` sends a
Slack incoming-webhook message instead (``text`` plus ``blocks``), which Slack, Mattermost and
most chat tools with a "Slack-compatible" webhook accept.

Headers
-------
``Content-Type: application/json``, ``User-Agent: runstream-notifier/<version>``, and:

``Idempotency-Key: <alert_id>:fired`` (or ``:resolved``)
    The same for every retry of one delivery, and across notifier restarts: a receiver that has
    seen the key already should answer 2xx and do nothing. Retries make deliveries at-least-once;
    the key lets a receiver make them exactly-once.

``Runstream-Signature: t=<unix seconds>,v1=<hex>`` (when the webhook has a secret)
    ``v1`` is HMAC-SHA256 with the shared secret over ``"<t>."`` followed by the raw body. Signing
    the timestamp lets receivers reject replays of an old request; :func:`verify` does the check
    (constant-time compare, 5 minutes of tolerance).

Retries
-------
Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and full
jitter (``Retry-After`` is honoured, capped by ``backoff_max``); other answers are final. After
``max_attempts`` the delivery is a dead letter.

Addresses
---------
URLs that point at link-local or cloud metadata addresses are refused (someone who may configure
a webhook must not get the notifier to POST to the instance's credentials endpoint) unless
``allow_private=True``. The check runs when the webhook is defined and again at every attempt,
against the address the connection actually reached, so DNS that changes in between (rebinding)
does not get past it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import math
import random
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from runstream._version import __version__
from runstream.errors import RunstreamError
from runstream.processors.alert import Alert

PayloadFormat = Literal["runstream", "slack"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PAYLOAD_VERSION = 1
SIGNATURE_HEADER = "Runstream-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = f"runstream-notifier/{__version__}"

# Hosts that cloud providers answer with instance metadata and credentials. The addresses are
# checked after resolution too; the names are refused even when they do not resolve here,
# because they will resolve on the machine the notifier eventually runs on.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OCI, DigitalOcean, ...
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6 (not link-local, so listed)
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud (carrier-grade NAT range)
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Headers that deliver() owns: letting configuration override them would break the signature,
# the idempotency contract or HTTP framing.
_RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        IDEMPOTENCY_HEADER.lower(),
        SIGNATURE_HEADER.lower(),
    }
)
# Enough of a response body to show a receiver's complaint; the rest is not read at all.
_MAX_RESPONSE_BYTES = 4096
_ERROR_SNIPPET = 120
_SLACK_TEXT_LIMIT = 2900  # Slack refuses section text longer than 3000 characters.
_LEVEL_EMOJI = {"info": ":information_source:", "warn": ":warning:", "error": ":red_circle:"}


class WebhookURLError(RunstreamError, ValueError):
    """A webhook URL is not allowed: wrong scheme, no host, or a link-local/metadata address."""


class WebhookConfigError(RunstreamError, ValueError):
    """A webhook setting (timeout, attempts, headers, format) has an invalid value."""


# --- the webhook ------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Webhook:
    """One receiver of alerts. Invalid settings and refused URLs fail here, at configuration."""

    url: str
    secret: str | None = None
    format: PayloadFormat = "runstream"
    timeout: float = 5.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    allow_private: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_url(self.url, self.allow_private)
        if self.format not in ("runstream", "slack"):
            raise WebhookConfigError(
                f"webhook format must be 'runstream' or 'slack', got {self.format!r}"
            )
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise WebhookConfigError(f"webhook timeout must be > 0 seconds, got {self.timeout!r}")
        if self.max_attempts < 1:
            raise WebhookConfigError(
                f"webhook max_attempts must be >= 1, got {self.max_attempts!r}"
            )
        if not (0 <= self.backoff_base <= self.backoff_max and math.isfinite(self.backoff_max)):
            raise WebhookConfigError(
                "webhook backoff needs 0 <= backoff_base <= backoff_max (finite), got "
                f"{self.backoff_base!r} and {self.backoff_max!r}"
            )
        if self.secret == "":
            raise WebhookConfigError("webhook secret is empty: give a secret or None")
        for name, value in self.headers.items():
            if name.lower() in _RESERVED_HEADERS:
                raise WebhookConfigError(f"webhook header {name!r} is set by runstream itself")
            if not _token(name) or any(c in value for c in "\r\n\0"):
                raise WebhookConfigError(f"webhook header {name!r} has an invalid name or value")
        # A read-only copy: the caller's dict may change later, this webhook must not.
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    @property
    def display_url(self) -> str:
        """The URL without what may be secret, for errors, logs and dead letters."""
        # Slack-style webhook URLs carry their secret token in the path.
        return redact_url(self.url, keep_path=self.format != "slack")

    def __repr__(self) -> str:
        # The URL may hold credentials and the secret must not end up in logs.
        return (
            f"Webhook(url={self.display_url!r}, format={self.format!r}, "
            f"secret={'set' if self.secret else None}, timeout={self.timeout!r}, "
            f"max_attempts={self.max_attempts!r}, allow_private={self.allow_private!r})"
        )


def _token(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name)


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` without user info, query and fragment (and path, unless ``keep_path``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    path = parts.path if keep_path else ("/…" if parts.path not in ("", "/") else parts.path)
    if parts.query:
        path += "?…"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


# --- which addresses are allowed --------------------------------------------------------------
#
# Loopback and RFC 1918 / unique-local addresses are allowed on purpose: a receiver on the same
# host or in the same private network (a chat bridge, an on-call gateway, a test server) is a
# normal deployment, and refusing it would only push people to allow_private=True, which opens
# the metadata endpoints too. The danger this guards against is narrower: link-local addresses
# are where cloud instances serve their metadata and credentials, so a POST there is never a
# legitimate webhook.


def _forbidden(address: IPAddress) -> str | None:
    """Why ``address`` may not receive webhooks, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        # The same IPv4 address spelled as IPv6 must not slip through.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = _forbidden(embedded)
            if reason:
                return reason
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address"
    return None


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("%eth0")
    except ValueError:
        return None


def _check_host(host: str, port: int, allow_private: bool, *, strict: bool) -> None:
    """Refuse ``host`` if it is, or resolves to, a forbidden address.

    With ``strict`` a resolution failure propagates (``socket.gaierror``); without it the host is
    accepted, since DNS may only exist where and when the webhook is used.
    """
    if allow_private:
        return
    if host in METADATA_HOSTS:
        raise WebhookURLError(
            f"webhook host {host!r} is a cloud metadata endpoint; set allow_private to allow it"
        )
    literal = _parse_ip(host)
    if literal is not None:
        reason = _forbidden(literal)
        if reason:
            raise WebhookURLError(
                f"webhook address {literal} is {reason}; set allow_private to allow it"
            )
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        if strict:
            raise
        return
    for info in infos:
        address = _parse_ip(str(info[4][0]))
        reason = _forbidden(address) if address is not None else None
        if reason:
            raise WebhookURLError(
                f"webhook host {host!r} resolves to {address}, {reason}; "
                "set allow_private to allow it"
            )


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    authorization: str | None


def _target(url: str) -> _Target:
    if any(c in url for c in "\r\n\t\0 "):
        raise WebhookURLError(f"webhook URL {redact_url(url)!r} contains whitespace")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookURLError(
            f"webhook URL {redact_url(url)!r} must be http:// or https://, not {scheme or 'none'!r}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise WebhookURLError(f"webhook URL {redact_url(url)!r} has an invalid port") from exc
    host = (parts.hostname or "").rstrip(".")  # "metadata." names the same host
    if not host:
        raise WebhookURLError(f"webhook URL {redact_url(url)!r} has no host")
    authorization = None
    if parts.username is not None:
        user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user_pass.encode()).decode()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(scheme, host, port or (443 if scheme == "https" else 80), path, authorization)


def check_url(url: str, allow_private: bool = False) -> None:
    """Raise :class:`WebhookURLError` unless ``url`` may receive webhooks.

    Refuses schemes other than http(s), and hosts that are or resolve to link-local or cloud
    metadata addresses (unless ``allow_private``). A host that does not resolve now is accepted;
    :func:`deliver` checks again at every attempt.
    """
    target = _target(url)
    _check_host(target.host, target.port, allow_private, strict=False)


# --- payloads ---------------------------------------------------------------------------------

# The episode's fields only: delivery bookkeeping (attempts, updated_at, ...) changes between
# versions of the record, and the body of one delivery must be the same on every retry.
_PAYLOAD_FIELDS = (
    "alert_id",
    "rule",
    "project",
    "run_id",
    "metric",
    "value",
    "step",
    "level",
    "title",
    "text",
    "fired_at",
    "resolved_at",
)


def event_name(alert: Alert) -> str:
    return "alert.resolved" if alert.resolved else "alert.fired"


def idempotency_key(alert: Alert) -> str:
    """``<alert_id>:fired`` or ``<alert_id>:resolved``: one key per delivery, across retries."""
    return f"{alert.alert_id}:{'resolved' if alert.resolved else 'fired'}"


def _fields(alert: Alert) -> dict[str, Any]:
    # Through pydantic's JSON so NaN and infinities become strings, as on the alerts topic.
    data: dict[str, Any] = json.loads(alert.model_dump_json(include=set(_PAYLOAD_FIELDS)))
    return {name: data[name] for name in _PAYLOAD_FIELDS}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def payload(alert: Alert, format: PayloadFormat = "runstream") -> bytes:
    """The body POSTed for ``alert`` (see the module docstring)."""
    if format == "runstream":
        return _dumps({"version": PAYLOAD_VERSION, "event": event_name(alert), **_fields(alert)})
    if format == "slack":
        return _dumps(_slack(alert))
    raise ValueError(f"unknown webhook payload format {format!r}")


def _format_value(value: float | None) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "NaN"
    return f"{value:.6g}"


def _slack_escape(text: str) -> str:
    # Slack's three control characters; anything else in user text is shown as written.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack(alert: Alert) -> dict[str, Any]:
    where = f"{alert.project}/{alert.run_id}"
    if alert.resolved:
        summary = f":white_check_mark: Resolved: {alert.title} ({where})"
    else:
        summary = f"{_LEVEL_EMOJI[alert.level]} [{alert.level}] {alert.title} ({where})"
    facts = [("Project", alert.project), ("Run", alert.run_id), ("Rule", alert.rule)]
    if alert.metric:
        facts.append(("Metric", alert.metric))
    if alert.value is not None:
        facts.append(("Value", _format_value(alert.value)))
    if alert.step is not None:
        facts.append(("Step", str(alert.step)))
    facts.append(("Fired at", _iso(alert.fired_at)))
    if alert.resolved_at is not None:
        facts.append(("Resolved at", _iso(alert.resolved_at)))
    # Escaped everywhere, "text" included: Slack formats it too, and a title "<!channel>"
    # must not page a whole channel.
    summary = _slack_escape(summary)
    headline = f"*{summary}*"
    if alert.text:
        headline += "\n" + _slack_escape(alert.text)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(headline, _SLACK_TEXT_LIMIT)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*{k}*\n{_slack_escape(v)}", 1900)}
                for k, v in facts[:10]  # Slack's limit per section
            ],
        },
        {
            "type": "context",
            "elements": [{"type": "plain_text", "text": f"alert {alert.alert_id}"}],
        },
    ]
    # "text" is what notifications and clients without blocks show.
    return {"text": _clip(summary, _SLACK_TEXT_LIMIT), "blocks": blocks}


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# --- signatures -------------------------------------------------------------------------------


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Runstream-Signature`` header value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """For receivers: whether ``header`` signs ``body`` with ``secret`` within the tolerance.

    ``body`` must be the raw request bytes (not re-serialized JSON). Several ``v1=`` entries are
    accepted, so a sender can sign with an old and a new secret while they rotate.
    """
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = _mac(secret, timestamp, body).encode()
    # Check every candidate so the time taken does not tell which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode())
    return matched


# --- delivery ---------------------------------------------------------------------------------


@dataclass
class DeliveryResult:
    """What became of one delivery: the notifier stores it as the alert's delivery state."""

    delivered: bool
    attempts: int
    status: int | None  # HTTP status of the last answer; None when there was none
    error: str  # last error; empty once delivered
    dead_letter: bool
    elapsed: float  # seconds, including the waits between attempts


@dataclass(frozen=True)
class _Attempt:
    status: int | None = None
    error: str = ""
    retryable: bool = False
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _headers(webhook: Webhook, alert: Alert, target: _Target) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if target.authorization:
        headers["Authorization"] = target.authorization
    for name, value in webhook.headers.items():
        for existing in [h for h in headers if h.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    headers["Content-Type"] = "application/json"
    headers[IDEMPOTENCY_HEADER] = idempotency_key(alert)
    return headers


def _backoff(attempt: int, webhook: Webhook, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))), spreads out herds of retries."""
    ceiling = min(webhook.backoff_max, webhook.backoff_base * 2.0 ** min(attempt - 1, 62))
    return rng() * ceiling


def _retry_after(value: str | None) -> float | None:
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


def deliver(
    webhook: Webhook,
    alert: Alert,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> DeliveryResult:
    """POST ``alert`` to ``webhook`` until a 2xx, a final answer, or ``max_attempts``.

    Returns the outcome; HTTP and network problems never raise. ``sleep``, ``clock`` and ``rng``
    are for tests (``clock`` measures ``elapsed``; socket timeouts always use real time).
    """
    started = clock()
    target = _target(webhook.url)
    body = payload(alert, webhook.format)
    headers = _headers(webhook, alert, target)
    attempt = 0
    while True:
        attempt += 1
        if webhook.secret is not None:
            # Fresh per attempt: a retry after a long backoff must not look like a replay.
            headers[SIGNATURE_HEADER] = sign(webhook.secret, int(time.time()), body)
        outcome = _attempt(webhook, target, body, headers)
        if outcome.ok:
            return DeliveryResult(True, attempt, outcome.status, "", False, clock() - started)
        if not outcome.retryable or attempt >= webhook.max_attempts:
            return DeliveryResult(
                False, attempt, outcome.status, outcome.error, True, clock() - started
            )
        if outcome.retry_after is not None:
            delay = min(outcome.retry_after, webhook.backoff_max)
        else:
            delay = _backoff(attempt, webhook, rng)
        sleep(delay)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


_tls_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _tls_context
    if _tls_context is None:
        _tls_context = ssl.create_default_context()
    return _tls_context


def _attempt(
    webhook: Webhook, target: _Target, body: bytes, headers: Mapping[str, str]
) -> _Attempt:
    """One POST. Classifies every HTTP and network outcome; raises for nothing else."""
    try:
        # Again at send time: the name may resolve elsewhere than when the webhook was defined.
        _check_host(target.host, target.port, webhook.allow_private, strict=True)
    except WebhookURLError as exc:
        return _Attempt(error=f"refused: {exc}")
    except (socket.gaierror, UnicodeError):
        return _Attempt(error=f"cannot resolve {target.host}", retryable=True)

    # http.client rather than urllib: no proxies from the environment (the address check must
    # see the real peer) and no redirects (a 3xx could point anywhere, metadata included).
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = http.client.HTTPSConnection(
            target.host, target.port, timeout=webhook.timeout, context=_tls()
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=webhook.timeout)
    # One deadline for the exchange, so a receiver that trickles bytes cannot hold a worker
    # thread for many timeouts in a row.
    deadline = time.monotonic() + webhook.timeout
    try:
        connection.connect()
        sock = connection.sock
        assert sock is not None
        if not webhook.allow_private:
            # The address this socket reached, not the one resolved a moment ago (DNS rebinding).
            peer = _parse_ip(str(sock.getpeername()[0]))
            reason = _forbidden(peer) if peer is not None else None
            if reason:
                return _Attempt(error=f"refused: {target.host} connected to {peer}, {reason}")
        sock.settimeout(_remaining(deadline))
        connection.request("POST", target.path, body=body, headers=dict(headers))
        sock.settimeout(_remaining(deadline))
        response = connection.getresponse()
        sock.settimeout(_remaining(deadline))
        answer = response.read(_MAX_RESPONSE_BYTES)
        return _classify(webhook, response.status, response.getheader("Retry-After"), answer)
    except TimeoutError:
        return _Attempt(error=f"timed out after {webhook.timeout}s", retryable=True)
    except ConnectionRefusedError:
        return _Attempt(error="connection refused", retryable=True)
    except ssl.SSLCertVerificationError as exc:
        # A certificate that does not verify will not verify in a minute either.
        return _Attempt(error=f"TLS certificate rejected: {exc.verify_message or exc.reason}")
    except ssl.SSLError as exc:
        return _Attempt(error=f"TLS error: {exc.reason or exc}", retryable=True)
    except http.client.RemoteDisconnected:
        return _Attempt(error="connection closed without an answer", retryable=True)
    except ConnectionResetError:
        return _Attempt(error="connection reset", retryable=True)
    except http.client.HTTPException as exc:
        return _Attempt(error=f"bad HTTP answer: {type(exc).__name__}", retryable=True)
    except OSError as exc:
        return _Attempt(error=f"network error: {exc.strerror or exc}", retryable=True)
    finally:
        connection.close()


def _classify(webhook: Webhook, status: int, retry_after: str | None, answer: bytes) -> _Attempt:
    if 200 <= status < 300:
        return _Attempt(status=status)
    error = f"HTTP {status} from {webhook.display_url}"
    snippet = " ".join(answer.decode("utf-8", "replace").split())
    if snippet:
        error += ": " + _clip(snippet, _ERROR_SNIPPET)
    if 300 <= status < 400:
        return _Attempt(status=status, error=error + " (redirects are not followed)")
    # 408 is a timeout the receiver noticed first; 429 and 5xx are the receiver's own trouble.
    retryable = status in (408, 429) or status >= 500
    return _Attempt(status, error, retryable, _retry_after(retry_after) if retryable else None)


def dead_letter_record(webhook: Webhook, alert: Alert, result: DeliveryResult) -> bytes:
    """JSON for the dead-letter topic: where it failed, why, and the undelivered payload."""
    record = {
        "version": 1,
        "url": webhook.display_url,
        "format": webhook.format,
        "alert_id": alert.alert_id,
        "event": event_name(alert),
        "idempotency_key": idempotency_key(alert),
        "attempts": result.attempts,
        "status": result.status,
        "error": result.error,
        "failed_at": _iso(datetime.now(timezone.utc)),
        "payload": json.loads(payload(alert, webhook.format)),
    }
    return _dumps(record)
