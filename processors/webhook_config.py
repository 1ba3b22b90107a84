"""The notifier's webhooks file: each ``[[webhook]]`` entry on its own.

A bad entry (no url, a refused address, a wrong type, an unknown key, an empty secret, ...) is
skipped with one error that names it (its number in the file and its URL without secrets) and
says what is wrong; the other entries work. Only a file that cannot be read or parsed as TOML
stops the notifier, with the parser's message: delivering to none of the webhooks and committing
past every alert would lose them all, while a notifier that does not start leaves them in Kafka.

Format (``RUNSTREAM_WEBHOOKS``, default ``<home>/webhooks.toml``)::

    [[webhook]]
    url = "https://hooks.example.com/runstream"
    name = "on-call"                # optional: how the delivery state names it (default: URL)
    secret = "shared-secret"        # signs each POST (Runstream-Signature)
    format = "runstream"            # or "slack"
    levels = ["warn", "error"]      # optional: which alert levels to send
    projects = ["vision"]           # optional
    timeout = 5.0                   # seconds per attempt, the whole exchange
    max_attempts = 6                # then a dead letter
    backoff_base = 0.5              # seconds; retries back off exponentially with jitter
    backoff_max = 30.0
    concurrency = 4                 # attempts at once to this webhook
    queue_limit = 1000              # deliveries it may hold; past it, failed and dead-lettered
    allow_private = false           # true to allow loopback, private and link-local addresses
    headers = { Authorization = "Bearer ..." }
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from runstream.errors import SettingsError
from runstream.processors.alert import Alert
from runstream.processors.rules import toml_module
from runstream.processors.webhook_addresses import redact_url
from runstream.processors.webhooks import Webhook

logger = logging.getLogger("runstream.notifier")

WEBHOOK_FIELDS = frozenset(f.name for f in fields(Webhook))
ROUTE_FIELDS = frozenset({"levels", "projects"})
LEVELS = frozenset({"info", "warn", "error"})


@dataclass(frozen=True)
class Route:
    """A webhook and which alerts it wants (empty: all)."""

    webhook: Webhook
    levels: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()

    def wants(self, alert: Alert) -> bool:
        return (not self.levels or alert.level in self.levels) and (
            not self.projects or alert.project in self.projects
        )


@dataclass
class WebhookFile:
    """What a webhooks file holds: the entries that work, and one message per entry that does
    not (or per problem of the file as a whole)."""

    routes: list[Route] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _names(value: Any, what: str, allowed: frozenset[str] | None = None) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings, got {value!r}")
    if allowed is not None and not set(value) <= allowed:
        raise ValueError(
            f"{what} must be among {', '.join(sorted(allowed))}, got {', '.join(sorted(value))}"
        )
    return frozenset(value)


def _label(index: int, entry: Mapping[str, Any]) -> str:
    url = entry.get("url")
    shown = redact_url(url, keep_path=False) if isinstance(url, str) else None
    name = entry.get("name")
    if isinstance(name, str) and name:
        return f"webhook #{index} ({name!r})"
    return f"webhook #{index} ({shown})" if shown else f"webhook #{index}"


def _route(entry: Mapping[str, Any]) -> Route:
    if "url" not in entry:
        raise ValueError("no url")
    unknown = set(entry) - WEBHOOK_FIELDS - ROUTE_FIELDS
    if unknown:
        known = ", ".join(sorted(WEBHOOK_FIELDS | ROUTE_FIELDS))
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} (known: {known})")
    levels = _names(entry.get("levels", []), "levels", LEVELS)
    projects = _names(entry.get("projects", []), "projects")
    webhook = Webhook(**{k: v for k, v in entry.items() if k in WEBHOOK_FIELDS})
    return Route(webhook, levels, projects)


def parse_webhooks(data: Mapping[str, Any], source: str) -> WebhookFile:
    """The routes of a parsed webhooks document; every bad entry becomes one problem."""
    found = WebhookFile()
    extra = set(data) - {"webhook"}
    if extra:
        found.problems.append(
            f"{source}: unknown top-level key(s) {', '.join(sorted(extra))} ignored; webhooks "
            "are [[webhook]] entries"
        )
    entries = data.get("webhook", [])
    if not isinstance(entries, list):
        found.problems.append(f"{source}: 'webhook' must be a list of [[webhook]] entries")
        return found
    names: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            found.problems.append(f"{source}: webhook #{index}: not a table but {entry!r}; skipped")
            continue
        label = _label(index, entry)
        try:
            route = _route(entry)
        except (TypeError, ValueError) as exc:  # the webhook errors are ValueErrors
            found.problems.append(f"{source}: {label}: {exc}; skipped")
            continue
        if route.webhook.name in names and "name" in entry:
            found.problems.append(
                f"{source}: {label}: name {route.webhook.name!r} is already used by another "
                "webhook; skipped (names must be unique: they key the delivery state)"
            )
            continue
        route = _named_apart(route, names, index)
        names.add(route.webhook.name)
        found.routes.append(route)
    return found


def _named_apart(route: Route, names: set[str], index: int) -> Route:
    """``route``, renamed ``<name> #<index>`` if another webhook has its (default) name: two
    entries with the same URL (say, two formats) would share their delivery state."""
    if route.webhook.name not in names:
        return route
    renamed = Webhook(**{**_fields_of(route.webhook), "name": f"{route.webhook.name} #{index}"})
    return Route(renamed, route.levels, route.projects)


def unique_routes(routes: Sequence[Route]) -> list[Route]:
    """``routes`` with names made unique as :func:`parse_webhooks` does (for routes built in
    code)."""
    names: set[str] = set()
    unique = []
    for index, given in enumerate(routes, start=1):
        route = _named_apart(given, names, index)
        names.add(route.webhook.name)
        unique.append(route)
    return unique


def _fields_of(webhook: Webhook) -> dict[str, Any]:
    return {f.name: getattr(webhook, f.name) for f in fields(Webhook)}


def load_webhooks(path: Path) -> WebhookFile:
    """The webhooks of a TOML file (none if it does not exist); a bad entry is a problem, not an
    error. Raises :class:`SettingsError` only when the file cannot be read or parsed."""
    tomllib = toml_module()
    if not path.exists():
        return WebhookFile()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # TOMLDecodeError and UnicodeDecodeError: ValueErrors
        raise SettingsError(
            f"cannot read webhooks from {path}: {exc}. Fix the file; the notifier does not "
            "start without it, so that no alert is committed undelivered"
        ) from exc
    return parse_webhooks(data, str(path))


def load_routes(path: Path) -> list[Route]:
    """The webhooks of a TOML file that work; each bad entry is logged once and skipped."""
    found = load_webhooks(path)
    for problem in found.problems:
        logger.error("%s", problem)
    return found.routes
