"""Webhook delivery against a real HTTP server on 127.0.0.1: retries, idempotency, signatures."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from runstream._version import __version__
from runstream.processors import webhooks
from runstream.processors.alert import Alert, alert_id
from runstream.processors.webhooks import (
    Webhook,
    WebhookConfigError,
    WebhookURLError,
    check_url,
    dead_letter_record,
    deliver,
    payload,
    sign,
    verify,
)

SECRET = "s3cret-shared-with-the-receiver"
FIRED = datetime(2024, 6, 1, 12, 34, 56, tzinfo=timezone.utc)
RESOLVED = datetime(2024, 6, 1, 12, 40, 0, tzinfo=timezone.utc)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


# What the receiver answers: status, extra headers, body, seconds to stall before answering.
Answer = tuple[int, dict[str, str], bytes, float]
Responder = Callable[[Request, int], Answer]


@dataclass
class Receiver:
    url: str
    requests: list[Request] = field(default_factory=list)
    respond: Responder = lambda request, index: (200, {}, b"ok", 0.0)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = Request(self.path, dict(self.headers.items()), self.rfile.read(length))
            with state.lock:
                state.requests.append(request)
                index = len(state.requests) - 1
            status, headers, body, stall = state.respond(request, index)
            if stall and state.stop.wait(stall):
                return
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # Stalling handlers meet closed sockets at teardown; that is expected, not a test failure.
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/alerts"
    try:
        yield state
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def make_alert(
    *, episode: int = 0, value: float | None = float("nan"), resolved: bool = False
) -> Alert:
    return Alert(
        alert_id=alert_id("loss-is-nan", "vision", "resnet-42", "train/loss", episode),
        rule="loss-is-nan",
        project="vision",
        run_id="resnet-42",
        metric="train/loss",
        value=value,
        step=1200,
        level="error",
        title="train/loss is NaN",
        text="train/loss became NaN at step 1200.",
        fired_at=FIRED,
        resolved_at=RESOLVED if resolved else None,
    )


def hook(url: str, **kwargs: Any) -> Webhook:
    # The receivers of these tests listen on loopback, which only allow_private reaches.
    settings: dict[str, Any] = {
        "timeout": 0.5,
        "backoff_base": 0.1,
        "backoff_max": 1.0,
        "allow_private": True,
    }
    settings.update(kwargs)
    return Webhook(url, **settings)


class Sleeps(list[float]):
    """A sleep() that records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def sequence(*statuses: int) -> Responder:
    """Answer the n-th request with statuses[n] (the last one repeats)."""

    def respond(request: Request, index: int) -> Answer:
        return statuses[min(index, len(statuses) - 1)], {}, b"", 0.0

    return respond


# --- (1) retries -------------------------------------------------------------------------------


def test_500_twice_then_200_is_delivered_on_the_third_attempt(receiver: Receiver) -> None:
    receiver.respond = sequence(500, 500, 200)
    sleeps = Sleeps()
    webhook = hook(receiver.url, secret=SECRET, backoff_base=0.5, backoff_max=0.8)
    result = deliver(webhook, make_alert(), sleep=sleeps, rng=lambda: 1.0)

    assert result.delivered and not result.dead_letter
    assert (result.attempts, result.status, result.error) == (3, 200, "")
    assert len(receiver.requests) == 3
    keys = {r.headers["Idempotency-Key"] for r in receiver.requests}
    assert keys == {f"{make_alert().alert_id}:fired"}
    assert len({r.body for r in receiver.requests}) == 1
    # Exponential (0.5, then 1.0 capped at 0.8) and never over the cap.
    assert sleeps == [0.5, 0.8]
    assert all(0 <= d <= webhook.backoff_max for d in sleeps)


def test_backoff_doubles_up_to_the_cap_with_full_jitter(receiver: Receiver) -> None:
    receiver.respond = sequence(503)
    sleeps = Sleeps()
    webhook = hook(receiver.url, max_attempts=6, backoff_base=0.5, backoff_max=2.0)
    result = deliver(webhook, make_alert(), sleep=sleeps, rng=lambda: 1.0)
    assert sleeps == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert result.dead_letter and result.attempts == 6 and len(receiver.requests) == 6
    assert result.error == f"HTTP 503 from {receiver.url}"

    jittered = Sleeps()
    deliver(webhook, make_alert(), sleep=jittered, rng=lambda: 0.25)
    assert jittered == [0.125, 0.25, 0.5, 0.5, 0.5]

    randomized = Sleeps()
    deliver(webhook, make_alert(), sleep=randomized)  # the real random.random
    ceilings = [0.5, 1.0, 2.0, 2.0, 2.0]
    assert all(0 <= d <= c for d, c in zip(randomized, ceilings, strict=True))


def test_elapsed_counts_the_waits(receiver: Receiver) -> None:
    receiver.respond = sequence(500, 200)
    now = [100.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    result = deliver(
        hook(receiver.url), make_alert(), sleep=sleep, clock=lambda: now[0], rng=lambda: 1.0
    )
    assert result.delivered and result.elapsed == pytest.approx(0.1)


# --- (2) idempotency ---------------------------------------------------------------------------


def test_a_receiver_that_dedups_by_idempotency_key_acts_once_per_delivery(
    receiver: Receiver,
) -> None:
    processed: dict[str, int] = {}

    def respond(request: Request, index: int) -> Answer:
        key = request.headers["Idempotency-Key"]
        if key in processed:
            return 200, {}, b"duplicate", 0.0
        processed[key] = processed.get(key, 0) + 1
        # The receiver did the work but failed before answering: the sender must retry.
        return 503, {}, b"", 0.0

    receiver.respond = respond
    webhook = hook(receiver.url)
    alerts = [make_alert(episode=e, resolved=r) for e in range(3) for r in (False, True)]
    for alert in alerts:
        assert deliver(webhook, alert, sleep=Sleeps()).delivered
    # The notifier may deliver again after a restart: same key, nothing done twice.
    assert deliver(webhook, alerts[0], sleep=Sleeps()).delivered

    assert len(receiver.requests) == 2 * len(alerts) + 1
    assert processed == {f"{a.alert_id}:{'resolved' if a.resolved else 'fired'}": 1 for a in alerts}
    assert len({a.alert_id for a in alerts}) == 3


# --- (3) permanent failures --------------------------------------------------------------------


def test_400_is_not_retried_and_is_a_dead_letter(receiver: Receiver) -> None:
    receiver.respond = lambda request, index: (400, {}, b'{"error": "bad payload"}', 0.0)
    sleeps = Sleeps()
    result = deliver(hook(receiver.url), make_alert(), sleep=sleeps)
    assert (result.delivered, result.dead_letter, result.attempts, result.status) == (
        False,
        True,
        1,
        400,
    )
    assert result.error == f'HTTP 400 from {receiver.url}: {{"error": "bad payload"}}'
    assert sleeps == [] and len(receiver.requests) == 1


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.respond = lambda r, i: (302, {"Location": "http://169.254.169.254/"}, b"", 0.0)
    result = deliver(hook(receiver.url), make_alert(), sleep=Sleeps())
    assert result.dead_letter and result.attempts == 1 and "redirects" in result.error
    assert len(receiver.requests) == 1


# --- (4) timeouts and unreachable receivers ----------------------------------------------------


def test_a_receiver_that_never_answers_in_time_is_a_dead_letter(receiver: Receiver) -> None:
    receiver.respond = lambda request, index: (200, {}, b"", 5.0)
    sleeps = Sleeps()
    started = time.monotonic()
    result = deliver(hook(receiver.url, timeout=0.2, max_attempts=3), make_alert(), sleep=sleeps)
    assert time.monotonic() - started < 2.0
    assert result.dead_letter and not result.delivered
    assert (result.attempts, result.status) == (3, None)
    assert result.error == "timed out after 0.2s"
    assert len(receiver.requests) == 3 and len(sleeps) == 2


def test_connection_refused_is_retried_then_dead_lettered() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    result = deliver(hook(f"http://127.0.0.1:{port}/", max_attempts=3), make_alert(), sleep=sleeps)
    assert result.dead_letter and result.attempts == 3
    assert result.error == "connection refused"


# --- (5) signatures ----------------------------------------------------------------------------


def test_sign_and_verify() -> None:
    body = payload(make_alert())
    now = 1_717_245_296
    header = sign(SECRET, now, body)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body, now=now + 10)
    assert not verify("wrong secret", header, body, now=now)
    assert not verify(SECRET, header, body.replace(b"resnet-42", b"resnet-43"), now=now)
    assert not verify(SECRET, header, body, now=now + 301)  # stale: a replay
    assert not verify(SECRET, header, body, now=now - 301)  # from the future
    assert verify(SECRET, header, body, tolerance_seconds=3600, now=now + 301)
    for broken in ("", "t=abc,v1=00", f"t={now}", "v1=" + header.split("v1=")[1], "garbage"):
        assert not verify(SECRET, broken, body, now=now)
    # Rotation: the old and the new secret both sign.
    rotated = f"{header},v1={sign('new secret', now, body).split('v1=')[1]}"
    assert verify(SECRET, rotated, body, now=now) and verify("new secret", rotated, body, now=now)


def test_the_receiver_verifies_the_headers_it_got(receiver: Receiver) -> None:
    webhook = hook(receiver.url, secret=SECRET, headers={"Authorization": "Bearer t0ken"})
    alert = make_alert()
    assert deliver(webhook, alert, sleep=Sleeps()).delivered
    (request,) = receiver.requests
    assert verify(SECRET, request.headers["Runstream-Signature"], request.body)
    assert not verify("another secret", request.headers["Runstream-Signature"], request.body)
    assert request.body == payload(alert)
    assert request.path == "/hooks/alerts"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"runstream-notifier/{__version__}"
    assert request.headers["Idempotency-Key"] == f"{alert.alert_id}:fired"
    assert request.headers["Authorization"] == "Bearer t0ken"


def test_no_signature_header_without_a_secret(receiver: Receiver) -> None:
    assert deliver(hook(receiver.url), make_alert(), sleep=Sleeps()).delivered
    assert "Runstream-Signature" not in receiver.requests[0].headers


def test_credentials_in_the_url_become_basic_auth(receiver: Receiver) -> None:
    url = receiver.url.replace("http://", "http://alice:p%40ss@") + "?token=abc"
    assert deliver(hook(url), make_alert(), sleep=Sleeps()).delivered
    (request,) = receiver.requests
    assert request.headers["Authorization"] == "Basic YWxpY2U6cEBzcw=="  # alice:p@ss
    assert request.path == "/hooks/alerts?token=abc"


# --- (6) which addresses are allowed (issue 10, item 12) --------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.1.1:8080/hook",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://100.100.100.200/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA/",
        "http://metadata./",
        # loopback, private, unspecified, multicast, reserved, in every spelling
        "http://127.0.0.1:8123/?query=INSERT",
        "http://127.1.2.3/",
        "http://[::1]:9000/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://10.0.0.5/hook",
        "http://172.16.0.1/",
        "http://192.168.1.2/",
        "http://[fd12:3456::1]/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://192.0.2.1/",  # documentation
        "http://localhost:8123/",
        "file:///etc/passwd",
        "ftp://x",
        "http:///no-host",
        "http://example.com:99999/",
    ],
)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(WebhookURLError):
        check_url(url)
    with pytest.raises(WebhookURLError):
        Webhook(url)


@pytest.mark.parametrize(
    "url", ["http://93.184.215.14/hook", "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/"]
)
def test_check_url_accepts_public_addresses(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://10.0.0.5/", "http://[::1]/"])
def test_allow_private_allows_loopback_and_private(url: str) -> None:
    check_url(url, allow_private=True)
    assert Webhook(url, allow_private=True).allow_private


@given(st.ip_addresses())
@hsettings(max_examples=300, deadline=None)
def test_an_address_is_refused_unless_it_is_public(address: Any) -> None:
    reason = webhooks.forbidden(address)
    public = address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
    embedded = getattr(address, "ipv4_mapped", None) or getattr(address, "sixtofour", None)
    if embedded is not None and webhooks.forbidden(embedded):
        public = False
    assert (reason is None) == (public and address not in webhooks.METADATA_ADDRESSES)


def test_check_url_refuses_a_name_that_resolves_to_a_private_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "sneaky.example"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(WebhookURLError, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        check_url("https://sneaky.example/hook")
    check_url("https://sneaky.example/hook", allow_private=True)


def test_a_name_that_does_not_resolve_yet_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    check_url("https://hooks.example.invalid/hook")  # DNS may come later, where it runs
    result = deliver(Webhook("https://hooks.example.invalid/hook"), make_alert(), sleep=Sleeps())
    assert result.dead_letter and result.attempts == 6
    assert result.error == "cannot resolve hooks.example.invalid"


def test_allow_private_allows_metadata() -> None:
    check_url("http://169.254.169.254/", allow_private=True)
    assert Webhook("http://169.254.169.254/", allow_private=True).allow_private


def test_a_name_that_resolves_to_loopback_at_send_time_is_refused(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: public when the webhook is defined, loopback when it is used."""
    port = int(receiver.url.split(":")[2].split("/")[0])
    url = f"http://rebind.example:{port}/hooks/alerts"
    answers = {"now": "93.184.215.14"}

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        assert host == "rebind.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers["now"], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    webhook = Webhook(url, timeout=0.5)  # public now: accepted
    answers["now"] = "127.0.0.1"
    sleeps = Sleeps()
    result = deliver(webhook, make_alert(), sleep=sleeps)
    assert result.dead_letter and result.attempts == 1 and sleeps == []
    assert result.error.startswith("refused:") and "127.0.0.1, a loopback address" in result.error
    assert receiver.requests == []


def test_the_connection_goes_to_the_address_that_was_checked(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that answers the check with a public address and any later lookup with loopback
    (where the receiver listens): resolved once per attempt, so the receiver sees nothing."""
    port = int(receiver.url.split(":")[2].split("/")[0])
    lookups: list[str] = []

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        address = "192.88.99.1" if not lookups else "127.0.0.1"  # public (6to4 relay anycast)
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    webhook = Webhook(f"http://flip.example:{port}/", timeout=0.3, max_attempts=1)
    lookups.clear()
    result = deliver(webhook, make_alert(), sleep=Sleeps())
    assert not result.delivered and receiver.requests == []
    assert lookups == ["192.88.99.1"]  # one lookup, no second one by name at connect time


def test_invalid_settings_fail_at_definition() -> None:
    for kwargs in (
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"timeout": 0},
        {"timeout": "5"},
        {"timeout": math.inf},
        {"backoff_base": 5.0, "backoff_max": 1.0},
        {"format": "teams"},
        {"secret": ""},
        {"secret": 42},
        {"allow_private": "yes"},
        {"concurrency": 0},
        {"queue_limit": -1},
        {"name": "a\nb"},
        {"headers": ["x"]},
        {"headers": {"X-Number": 5}},
        {"headers": {"Idempotency-Key": "mine"}},
        {"headers": {"X-Evil": "a\r\nInjected: yes"}},
    ):
        with pytest.raises(WebhookConfigError):
            Webhook("http://93.184.215.14/", **kwargs)


def test_repr_hides_secrets() -> None:
    webhook = Webhook("https://bob:hunter2@93.184.215.14/h?key=k3y", secret="sssh")
    assert "hunter2" not in repr(webhook) and "sssh" not in repr(webhook)
    assert "k3y" not in repr(webhook)
    assert webhook.name == "https://93.184.215.14/h?…"


# --- (7) payloads ------------------------------------------------------------------------------


def test_runstream_payload() -> None:
    fired = json.loads(payload(make_alert()))
    assert fired["version"] == 1 and fired["event"] == "alert.fired"
    assert fired["value"] == "NaN" and fired["resolved_at"] is None
    assert fired["fired_at"] == "2024-06-01T12:34:56Z"
    assert set(fired) == {"version", "event", *webhooks.PAYLOAD_FIELDS}

    resolved = json.loads(payload(make_alert(resolved=True, value=0.25)))
    assert resolved["event"] == "alert.resolved" and resolved["value"] == 0.25
    assert resolved["resolved_at"] == "2024-06-01T12:40:00Z"
    assert json.loads(payload(make_alert(value=None)))["value"] is None
    assert json.loads(payload(make_alert(value=math.inf)))["value"] == "Infinity"


def test_payload_does_not_change_with_delivery_bookkeeping() -> None:
    alert = make_alert()
    later = alert.model_copy(update={"attempts": 3, "delivery_state": "delivering"})
    assert payload(alert) == payload(later)


def test_the_documented_example_is_what_is_sent() -> None:
    doc = webhooks.__doc__ or ""
    example, _ = json.JSONDecoder().raw_decode(doc[doc.index("{", doc.index("Example::")) :])
    alert = make_alert().model_copy(update={"alert_id": example["alert_id"]})
    assert json.loads(payload(alert)) == example


def test_slack_payload() -> None:
    message = json.loads(payload(make_alert(), "slack"))
    assert message["text"] == ":red_circle: [error] train/loss is NaN (vision/resnet-42)"
    assert isinstance(message["blocks"], list) and message["blocks"]
    fields = " ".join(f["text"] for f in message["blocks"][1]["fields"])
    assert "NaN" in fields and "train/loss" in fields and "1200" in fields

    resolved = json.loads(payload(make_alert(resolved=True), "slack"))
    assert resolved["text"].startswith(":white_check_mark: Resolved: train/loss is NaN")

    tricky = make_alert().model_copy(update={"title": "<!channel> & x" * 1000})
    message = json.loads(payload(tricky, "slack"))
    assert "<!channel>" not in json.dumps(message)
    assert len(message["blocks"][0]["text"]["text"]) <= 3000


def test_slack_webhook_delivers_the_slack_body(receiver: Receiver) -> None:
    assert deliver(hook(receiver.url, format="slack"), make_alert(), sleep=Sleeps()).delivered
    assert "text" in json.loads(receiver.requests[0].body)


# --- (8) Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"), [(429, "2", 2.0), (503, "120", 3.0), (429, "soon", 0.0)]
)
def test_retry_after_is_honoured_up_to_the_cap(
    receiver: Receiver, status: int, retry_after: str, expected: float
) -> None:
    def respond(request: Request, index: int) -> Answer:
        if index == 0:
            return status, {"Retry-After": retry_after}, b"", 0.0
        return 200, {}, b"", 0.0

    receiver.respond = respond
    sleeps = Sleeps()
    # rng 0: without Retry-After the backoff would be 0, so a 2.0 can only come from the header.
    webhook = hook(receiver.url, backoff_base=0.5, backoff_max=3.0)
    result = deliver(webhook, make_alert(), sleep=sleeps, rng=lambda: 0.0)
    assert result.delivered and result.attempts == 2
    assert sleeps == [expected]


def test_retry_after_as_an_http_date() -> None:
    assert webhooks._retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert webhooks._retry_after("7") == 7.0
    assert webhooks._retry_after(None) is None


# --- dead letters ------------------------------------------------------------------------------


def test_dead_letter_record(receiver: Receiver) -> None:
    receiver.respond = sequence(500)
    url = receiver.url.replace("http://", "http://alice:pw@") + "?token=abc"
    webhook = hook(url, max_attempts=2)
    alert = make_alert()
    result = deliver(webhook, alert, sleep=Sleeps())
    record = json.loads(dead_letter_record(webhook, alert, result))
    assert record["url"] == receiver.url + "?…"
    assert "pw" not in json.dumps(record) and "abc" not in json.dumps(record)
    assert record["alert_id"] == alert.alert_id
    assert record["attempts"] == 2 and record["status"] == 500
    assert record["error"] == result.error and record["error"].startswith("HTTP 500 from")
    assert record["payload"] == json.loads(payload(alert))


def test_dead_letter_of_a_slack_webhook_hides_the_token_in_the_path() -> None:
    webhook = Webhook("https://hooks.slack.com/services/T000/B000/XXXXSECRET", format="slack")
    result = webhooks.DeliveryResult(False, 6, 500, "HTTP 500 from x", True, 1.0)
    record = json.loads(dead_letter_record(webhook, make_alert(), result))
    assert record["url"] == "https://hooks.slack.com/…"
    assert "text" in record["payload"]
