"""Webhook payloads and signatures: what is POSTed, and how a receiver checks it.

The format is documented in :mod:`runstream.processors.webhooks` (module docstring).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from datetime import datetime, timezone
from typing import Any, Literal

from runstream.processors.alert import Alert

PayloadFormat = Literal["runstream", "slack"]

PAYLOAD_VERSION = 1
SIGNATURE_HEADER = "Runstream-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_SLACK_TEXT_LIMIT = 2900  # Slack refuses section text longer than 3000 characters.
_LEVEL_EMOJI = {"info": ":information_source:", "warn": ":warning:", "error": ":red_circle:"}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- payloads ---------------------------------------------------------------------------------

# The episode's fields only: delivery bookkeeping (attempts, updated_at, ...) changes between
# versions of the record, and the body of one delivery must be the same on every retry.
PAYLOAD_FIELDS = (
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
    data: dict[str, Any] = json.loads(alert.model_dump_json(include=set(PAYLOAD_FIELDS)))
    return {name: data[name] for name in PAYLOAD_FIELDS}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def payload(alert: Alert, format: PayloadFormat = "runstream") -> bytes:
    """The body POSTed for ``alert`` (see the module docstring)."""
    if format == "runstream":
        return dumps({"version": PAYLOAD_VERSION, "event": event_name(alert), **_fields(alert)})
    if format == "slack":
        return dumps(_slack(alert))
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
    facts.append(("Fired at", iso(alert.fired_at)))
    if alert.resolved_at is not None:
        facts.append(("Resolved at", iso(alert.resolved_at)))
    # Escaped everywhere, "text" included: Slack formats it too, and a title "<!channel>"
    # must not page a whole channel.
    summary = _slack_escape(summary)
    headline = f"*{summary}*"
    if alert.text:
        headline += "\n" + _slack_escape(alert.text)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(headline, _SLACK_TEXT_LIMIT)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": clip(f"*{k}*\n{_slack_escape(v)}", 1900)}
                for k, v in facts[:10]  # Slack's limit per section
            ],
        },
        {
            "type": "context",
            "elements": [{"type": "plain_text", "text": f"alert {alert.alert_id}"}],
        },
    ]
    # "text" is what notifications and clients without blocks show.
    return {"text": clip(summary, _SLACK_TEXT_LIMIT), "blocks": blocks}


def iso(moment: datetime) -> str:
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
