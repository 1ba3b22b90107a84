"""Which addresses a webhook may reach, and resolving a webhook's host to addresses it may use.

A webhook is a URL that whoever edits the webhooks file chooses, and the notifier POSTs to it
from inside the deployment. Without a rule that makes the notifier a way into everything it can
reach: the stack's own ClickHouse (a POST body to ClickHouse's HTTP interface is a query, and a
``?query=INSERT ...`` URL makes the alert's JSON the inserted data), Kafka's neighbours, cloud
metadata endpoints that hand out credentials. So only public unicast addresses are allowed
(``ipaddress``'s ``is_global``, plus the explicit checks below, after unwrapping an IPv4
address embedded in an IPv6 one); loopback, private (RFC 1918, unique-local), carrier-grade
NAT, link-local, unspecified, multicast, reserved and documentation ranges are refused unless
the webhook sets ``allow_private = true`` (a receiver in the same host or network, the tests'
own receivers).

The check runs when the webhook is defined (a literal address, or a name that resolves now) and
again at every attempt: :func:`resolve` resolves the name once, refuses the attempt if any
address is refused, and the connection is made to exactly those addresses, so a name that
resolves to a public address for the check and to 127.0.0.1 for the connection (DNS rebinding)
cannot get through.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from runstream.errors import RunstreamError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SockAddr = tuple[int, tuple[str, int] | tuple[str, int, int, int]]  # family, sockaddr

# Hosts that cloud providers answer with instance metadata and credentials. Refused by name
# even when they do not resolve here: they will resolve where the notifier eventually runs.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OCI, DigitalOcean, ...
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud (carrier-grade NAT range)
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the low 32 bits are an IPv4 address


class WebhookURLError(RunstreamError, ValueError):
    """A webhook URL is not allowed: wrong scheme, no host, or an address that is not public."""


def forbidden(address: IPAddress) -> str | None:
    """Why ``address`` may not receive webhooks (without ``allow_private``), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        # The same IPv4 address spelled as IPv6 (::ffff:127.0.0.1, 2002:7f00:1::, NAT64,
        # Teredo) reaches that IPv4 host: judge it as that host.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = forbidden(embedded)
            if reason:
                return reason
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for test, reason in (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    ):
        if test:
            return reason
    return None


def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("%eth0")
    except ValueError:
        return None


@dataclass(frozen=True)
class Target:
    """A webhook URL taken apart: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str
    authorization: str | None


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


def target(url: str) -> Target:
    """``url`` taken apart; :class:`WebhookURLError` if it is not an http(s) URL with a host."""
    if not isinstance(url, str):
        raise WebhookURLError(f"webhook url must be a string, got {type(url).__name__}")
    if any(c in url for c in "\r\n\t\0 "):
        raise WebhookURLError(f"webhook URL {redact_url(url)!r} contains whitespace")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookURLError(f"webhook URL {redact_url(url)!r} is not valid: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookURLError(
            f"webhook URL {redact_url(url)!r} must be http:// or https://, not {scheme or 'none'!r}"
        )
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
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path, authorization)


def _refuse_name(host: str) -> None:
    if host.lower() in METADATA_HOSTS:
        raise WebhookURLError(
            f"webhook host {host!r} is a cloud metadata endpoint; set allow_private to allow it"
        )


def _judge(host: str, addresses: list[SockAddr]) -> None:
    for _, sockaddr in addresses:
        address = parse_ip(str(sockaddr[0]))
        reason = forbidden(address) if address is not None else "not an IP address"
        if reason:
            shown = "is" if parse_ip(host) is not None else f"resolves to {address},"
            raise WebhookURLError(
                f"webhook host {host!r} {shown} {reason}; set allow_private = true on the "
                "webhook if it is meant to reach this address"
            )


def _getaddrinfo(host: str, port: int) -> list[SockAddr]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[SockAddr] = []
    for family, _, _, _, sockaddr in infos:
        entry: SockAddr = (int(family), sockaddr)  # type: ignore[assignment]
        if entry not in seen:
            seen.append(entry)
    return seen


def check_url(url: str, allow_private: bool = False) -> None:
    """Raise :class:`WebhookURLError` unless ``url`` may receive webhooks.

    Refuses schemes other than http(s), and hosts that are, or resolve now to, an address that
    is not public (module docstring) unless ``allow_private``. A name that does not resolve now
    is accepted (DNS may exist only where the notifier runs); every attempt checks again.
    """
    where = target(url)
    if allow_private:
        return
    _refuse_name(where.host)
    literal = parse_ip(where.host)
    if literal is not None:
        _judge(where.host, [(0, (str(literal), where.port))])
        return
    try:
        addresses = _getaddrinfo(where.host, where.port)
    except (OSError, UnicodeError):
        return
    _judge(where.host, addresses)


# getaddrinfo has no timeout of its own: it runs here so that an attempt can give up on it at
# its deadline (the lookup thread finishes on its own later).
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def resolve(where: Target, allow_private: bool, timeout: float) -> list[SockAddr]:
    """The addresses to connect to for ``where``, each one checked.

    Raises :class:`WebhookURLError` (refused: the attempt must not be made),
    ``socket.gaierror`` (does not resolve) or ``TimeoutError`` (no answer within ``timeout``
    seconds).
    """
    if not allow_private:
        _refuse_name(where.host)
    literal = parse_ip(where.host)
    if literal is not None:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        sockaddr: tuple[str, int] | tuple[str, int, int, int] = (
            (str(literal), where.port, 0, 0) if literal.version == 6 else (str(literal), where.port)
        )
        addresses: list[SockAddr] = [(int(family), sockaddr)]
    else:
        lookup = _resolver.submit(_getaddrinfo, where.host, where.port)
        try:
            addresses = lookup.result(timeout=max(timeout, 0.0))
        except FutureTimeout:
            raise TimeoutError from None
        except UnicodeError as exc:
            raise socket.gaierror(str(exc)) from exc
    if not allow_private:
        _judge(where.host, addresses)
    return addresses
