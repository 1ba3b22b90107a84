"""The UI's door: read-only methods only, and an optional shared token.

Without a token the UI trusts whoever reaches it, which is why it binds to 127.0.0.1 by default.
With one (``runstream ui --token T`` or ``RUNSTREAM_UI_TOKEN``), every request must carry it in
one of three ways:

- ``Authorization: Bearer T`` (scripts, curl);
- HTTP basic auth with password ``T`` and any user name (the browser asks for it: a refused page
  answers ``WWW-Authenticate: Basic``, RFC 7617);
- the cookie ``runstream_token`` (a digest of T) that ``/?token=T`` sets (HttpOnly,
  SameSite=Strict), so that a link can be shared once and the address bar then drops the token.

Tokens are compared in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "runstream_token"
READ_METHODS = frozenset({"GET", "HEAD"})


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token (hex, so no cookie quoting), not the token."""
    return hmac.new(token.encode("utf-8"), b"runstream-ui-cookie", hashlib.sha256).hexdigest()


def credentials_ok(headers: Headers, cookie: str | None, token: str) -> bool:
    """Whether a request's headers or cookie carry ``token`` (see the module doc)."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and _same(value.strip(), token):
        return True
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _, _, password = decoded.partition(":")
        if _same(password, token):
            return True
    return cookie is not None and _same(cookie, cookie_value(token))


class Guard:
    """ASGI middleware: refuses every method but GET and HEAD (405: the UI never writes), then,
    with a token, every request without it (401)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = self.refusal(scope)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        if scope["method"] not in READ_METHODS:
            return JSONResponse(
                {"error": "the runstream UI is read-only: only GET and HEAD are served"},
                status_code=405,
                headers={"Allow": "GET, HEAD"},
            )
        if self.token is None:
            return None
        headers = Headers(scope=scope)
        cookies = _cookies(headers.get("cookie", ""))
        if credentials_ok(headers, cookies.get(COOKIE), self.token):
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [""])[0]
        if scope["path"] == "/" and given and _same(given, self.token):
            # The token in a link: keep it in a cookie and take it out of the address bar.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(
                COOKIE,
                cookie_value(self.token),
                httponly=True,
                samesite="strict",
                max_age=30 * 86400,
            )
            return response
        if scope["path"].startswith("/api/"):
            return JSONResponse(
                {"error": "this runstream UI needs its token: Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="runstream"'},
            )
        return PlainTextResponse(
            "This runstream UI needs its token: open /?token=<token>, or give it as the "
            "password (any user name).",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="runstream", charset="UTF-8"'},
        )


def _cookies(header: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            found[name] = value
    return found
