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
Only public addresses receive webhooks: loopback, private, link-local, unspecified, multicast
and reserved addresses (IPv4, IPv6 and IPv4 written as IPv6) and cloud metadata endpoints are
refused unless the webhook sets ``allow_private=True``. A POST to the stack's own ClickHouse
HTTP port would be a query. The check runs when the webhook is defined and again at every
attempt, and the connection goes to the addresses that were checked (DNS rebinding does not get
past it); redirects are not followed. Details: :mod:`runstream.processors.webhook_addresses`.

Deadlines
---------
Each attempt has one deadline, ``timeout`` seconds, for the whole exchange (DNS, connect, TLS,
sending the request, the response's headers and body): a receiver that trickles its answer a
byte at a time is cut off there like one that never answers (:mod:`.webhook_http`).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from runstream._version import __version__
from runstream.errors import RunstreamError
from runstream.processors.alert import Alert
from runstream.processors.webhook_addresses import (
    METADATA_ADDRESSES,
    METADATA_HOSTS,
    Target,
    WebhookURLError,
    check_url,
    forbidden,
    redact_url,
    target,
)
from runstream.processors.webhook_http import Attempt, parse_retry_after, post
from runstream.processors.webhook_payload import (
    IDEMPOTENCY_HEADER,
    PAYLOAD_FIELDS,
    PAYLOAD_VERSION,
    SIGNATURE_HEADER,
    PayloadFormat,
    dumps,
    event_name,
    idempotency_key,
    iso,
    payload,
    sign,
    verify,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "METADATA_ADDRESSES",
    "METADATA_HOSTS",
    "PAYLOAD_FIELDS",
    "PAYLOAD_VERSION",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "Delivery",
    "DeliveryResult",
    "PayloadFormat",
    "Webhook",
    "WebhookConfigError",
    "WebhookURLError",
    "check_url",
    "dead_letter_record",
    "deliver",
    "event_name",
    "forbidden",
    "idempotency_key",
    "payload",
    "redact_url",
    "sign",
    "verify",
]

USER_AGENT = f"runstream-notifier/{__version__}"

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


class WebhookConfigError(RunstreamError, ValueError):
    """A webhook setting (timeout, attempts, headers, format, ...) has an invalid value."""


# --- the webhook ------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, repr=False)
class Webhook:
    """One receiver of alerts. Invalid settings and refused URLs fail here, at configuration
    (:class:`WebhookURLError`, :class:`WebhookConfigError`).

    ``timeout`` is seconds per attempt, for the whole exchange. ``concurrency`` (attempts at once)
    and ``queue_limit`` (deliveries waiting, retrying or in flight) bound what this webhook may
    hold: the notifier gives every webhook its own queue and threads, so a slow one holds back
    only its own deliveries. ``name`` identifies it in the delivery state (default: the URL
    without its secrets).
    """

    url: str
    secret: str | None = None
    format: PayloadFormat = "runstream"
    timeout: float = 5.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    allow_private: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    concurrency: int = 4
    queue_limit: int = 1_000

    def __post_init__(self) -> None:
        if not isinstance(self.allow_private, bool):
            raise WebhookConfigError(
                f"webhook allow_private must be true or false, got {self.allow_private!r}"
            )
        check_url(self.url, self.allow_private)
        if self.format not in ("runstream", "slack"):
            raise WebhookConfigError(
                f"webhook format must be 'runstream' or 'slack', got {self.format!r}"
            )
        if not (_is_number(self.timeout) and self.timeout > 0 and math.isfinite(self.timeout)):
            raise WebhookConfigError(f"webhook timeout must be > 0 seconds, got {self.timeout!r}")
        for setting in ("max_attempts", "concurrency", "queue_limit"):
            value = getattr(self, setting)
            if not (_is_int(value) and value >= 1):
                raise WebhookConfigError(
                    f"webhook {setting} must be an integer >= 1, got {value!r}"
                )
        if not (
            _is_number(self.backoff_base)
            and _is_number(self.backoff_max)
            and 0 <= self.backoff_base <= self.backoff_max
            and math.isfinite(self.backoff_max)
        ):
            raise WebhookConfigError(
                "webhook backoff needs 0 <= backoff_base <= backoff_max (finite numbers), got "
                f"{self.backoff_base!r} and {self.backoff_max!r}"
            )
        if self.secret is not None and not isinstance(self.secret, str):
            raise WebhookConfigError(
                f"webhook secret must be a string, got {type(self.secret).__name__}"
            )
        if self.secret == "":
            raise WebhookConfigError("webhook secret is empty: give a secret or None")
        if not isinstance(self.name, str) or any(not c.isprintable() for c in self.name):
            raise WebhookConfigError(f"webhook name must be printable text, got {self.name!r}")
        if not isinstance(self.headers, Mapping):
            raise WebhookConfigError(
                f"webhook headers must be a table of names to values, got {self.headers!r}"
            )
        for name, value in self.headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise WebhookConfigError(f"webhook header {name!r} must have a string value")
            if name.lower() in _RESERVED_HEADERS:
                raise WebhookConfigError(f"webhook header {name!r} is set by runstream itself")
            if not _token(name) or any(c in value for c in "\r\n\0"):
                raise WebhookConfigError(f"webhook header {name!r} has an invalid name or value")
        # A read-only copy: the caller's dict may change later, this webhook must not.
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        if not self.name:
            object.__setattr__(self, "name", self.display_url)

    @property
    def display_url(self) -> str:
        """The URL without what may be secret, for errors, logs and dead letters."""
        # Slack-style webhook URLs carry their secret token in the path.
        return redact_url(self.url, keep_path=self.format != "slack")

    def __repr__(self) -> str:
        # The URL may hold credentials and the secret must not end up in logs.
        return (
            f"Webhook(url={self.display_url!r}, name={self.name!r}, format={self.format!r}, "
            f"secret={'set' if self.secret else None}, timeout={self.timeout!r}, "
            f"max_attempts={self.max_attempts!r}, allow_private={self.allow_private!r})"
        )


def _token(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name)


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


def _headers(webhook: Webhook, alert: Alert, where: Target) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if where.authorization:
        headers["Authorization"] = where.authorization
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


class Delivery:
    """One alert to one webhook, one attempt at a time: the caller decides how to wait between
    attempts (:func:`deliver` sleeps; the notifier's queues hold no thread while waiting)."""

    def __init__(
        self,
        webhook: Webhook,
        alert: Alert,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.webhook = webhook
        self.alert = alert
        self.attempts = 0
        self._clock = clock
        self._rng = rng
        self._started = clock()
        self._target = target(webhook.url)
        self._body = payload(alert, webhook.format)
        self._headers = _headers(webhook, alert, self._target)

    def attempt(self) -> DeliveryResult | float:
        """Makes the next attempt: the result once it is final, else the seconds to wait before
        the next one. Never raises for HTTP or network trouble."""
        webhook = self.webhook
        self.attempts += 1
        if webhook.secret is not None:
            # Fresh per attempt: a retry after a long backoff must not look like a replay.
            self._headers[SIGNATURE_HEADER] = sign(webhook.secret, int(time.time()), self._body)
        outcome: Attempt = post(
            self._target,
            timeout=webhook.timeout,
            allow_private=webhook.allow_private,
            body=self._body,
            headers=self._headers,
            display_url=webhook.display_url,
        )
        elapsed = self._clock() - self._started
        if outcome.ok:
            return DeliveryResult(True, self.attempts, outcome.status, "", False, elapsed)
        if not outcome.retryable or self.attempts >= webhook.max_attempts:
            return DeliveryResult(
                False, self.attempts, outcome.status, outcome.error, True, elapsed
            )
        if outcome.retry_after is not None:
            return min(outcome.retry_after, webhook.backoff_max)
        return _backoff(self.attempts, webhook, self._rng)

    def given_up(self, reason: str) -> DeliveryResult:
        """The result of a delivery that stops without (more) attempts, e.g. at shutdown."""
        return DeliveryResult(
            False, self.attempts, None, reason, True, self._clock() - self._started
        )


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
    are for tests (``clock`` measures ``elapsed``; deadlines always use real time).
    """
    delivery = Delivery(webhook, alert, clock=clock, rng=rng)
    while True:
        outcome = delivery.attempt()
        if isinstance(outcome, DeliveryResult):
            return outcome
        sleep(outcome)


# For receivers and tests that parse the header themselves.
_retry_after = parse_retry_after


def dead_letter_record(webhook: Webhook, alert: Alert, result: DeliveryResult) -> bytes:
    """JSON for the dead-letter topic: where it failed, why, and the undelivered payload (enough
    to deliver it again by hand)."""
    record: dict[str, Any] = {
        "version": 1,
        "webhook": webhook.name,
        "url": webhook.display_url,
        "format": webhook.format,
        "alert_id": alert.alert_id,
        "event": event_name(alert),
        "idempotency_key": idempotency_key(alert),
        "attempts": result.attempts,
        "status": result.status,
        "error": result.error,
        "failed_at": iso(datetime.now(timezone.utc)),
        "payload": json.loads(payload(alert, webhook.format)),
    }
    return dumps(record)
