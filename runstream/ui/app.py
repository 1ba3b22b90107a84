"""The UI's ASGI app: JSON endpoints under ``/api/`` and the static front-end (plain ES modules
and uPlot, shipped in the package) under ``/static/``, one HTML page at ``/``.

Endpoints are synchronous functions: Starlette runs them in its thread pool. A ClickHouse client
of clickhouse-connect holds one HTTP session and refuses two queries at once in it, so each thread
borrows an Api (and a Reader for the SQL console) from a small pool instead of sharing one.
"""

from __future__ import annotations

import contextlib
import math
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from runstream.errors import (
    ClickHouseError,
    FilterError,
    QueryError,
    ReadRefusedError,
    RunNotFoundError,
)
from runstream.read import Api, Reader
from runstream.settings import Settings
from runstream.ui import data, series
from runstream.ui.auth import Guard

STATIC = Path(__file__).parent / "static"

# What the browser may load: our own files only (no CDN, no inline script), images from data:
# URLs (uPlot's legend markers). uPlot sets inline styles on its elements.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _new_api(settings: Settings) -> Api:
    return Api(settings=settings)


T = TypeVar("T", Api, Reader)


class Pool(Generic[T]):
    """Api and Reader objects, one in use per thread at a time (see the module doc)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make: Callable[[], T] = make
        self._idle: queue.LifoQueue[T] = queue.LifoQueue()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[T]:
        try:
            item = self._idle.get_nowait()
        except queue.Empty:
            item = self._make()
        try:
            yield item
        finally:
            self._idle.put(item)

    def close(self) -> None:
        while True:
            try:
                item = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                item.close()


class JSON(JSONResponse):
    """orjson: fast for the long float columns of a chart; the data are already JSON-ready."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, message: str, **extra: Any) -> Response:
    return JSON({"error": message, **extra}, status_code=status)


def _int(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"query parameter {name} must be an integer, not {raw!r}") from None


def _x_range(request: Request) -> tuple[float, float] | None:
    """``?min_x=&max_x=``: a zoom on a time or step-metric axis (seconds, or its values)."""
    raw = request.query_params.get("min_x"), request.query_params.get("max_x")
    if not raw[0] or not raw[1]:
        return None
    try:
        lo, hi = float(raw[0]), float(raw[1])
    except ValueError:
        raise ValueError(f"min_x and max_x must be numbers, not {raw[0]!r}, {raw[1]!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"min_x..max_x must be a finite range, not {lo}..{hi}")
    return lo, hi


def _x(request: Request) -> str:
    x = request.query_params.get("x", "step") or "step"
    if len(x) > 200:
        raise ValueError("x is the name of an axis: step, time, relative_time or a metric")
    return x


def _project(request: Request) -> str | None:
    """``?project=``: which project a run id is of (ids may repeat across projects)."""
    return request.query_params.get("project") or None


def _list(request: Request, name: str) -> list[str]:
    """``?name=a,b&name=c`` as ``[a, b, c]``; a comma inside quotes (``summary["a,b"]``) is
    part of its value."""
    return [v for raw in request.query_params.getlist(name) for v in _split(raw) if v]


def _split(text: str) -> list[str]:
    parts, current, quote = [], "", ""
    for i, char in enumerate(text):
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == ",":
            parts.append(current.strip())
            current = ""
            continue
        current += char
    parts.append(current.strip())
    return parts


def create_app(settings: Settings | None = None, token: str | None = None) -> Starlette:
    """The UI as a Starlette app, reading through ``runstream.Api(settings=settings)``.

    ``settings``: Settings.load() when None. ``token``: with one, every request must carry it
    (runstream/ui/auth.py); every method but GET and HEAD is refused either way."""
    settings = settings or Settings.load()
    apis: Pool[Api] = Pool(lambda: _new_api(settings))
    readers: Pool[Reader] = Pool(lambda: Reader(settings))

    def endpoint(work: Callable[[Request, Api], dict[str, Any]]) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            started = time.perf_counter()
            try:
                with apis.borrow() as api:
                    body = work(request, api)
            except (FilterError, ReadRefusedError, ValueError) as exc:
                return _error(400, str(exc))
            except QueryError as exc:
                return _error(400, str(exc), code=exc.code)
            except RunNotFoundError as exc:
                # The error's own message speaks to Python and the command line.
                where = f" in project {exc.project!r}" if exc.project is not None else ""
                return _error(
                    404,
                    f"no run {exc.run_id!r}{where}: pick one in a project's runs table (a run "
                    "that just started may not have landed yet: is the sink running?)",
                )
            except LookupError as exc:
                return _error(404, str(exc.args[0]) if exc.args else "not found")
            except ClickHouseError as exc:
                return _error(503, str(exc))
            response = JSON(body, headers={"Cache-Control": "no-store"})
            # The time spent here (queries, Python, JSON encoding; gzip comes after), which the
            # browser's devtools show (https://www.w3.org/TR/server-timing/) and bench/ui.py reads.
            elapsed = (time.perf_counter() - started) * 1000
            response.headers["Server-Timing"] = f"app;dur={elapsed:.1f}"
            return response

        return handle

    def projects(request: Request, api: Api) -> dict[str, Any]:
        return data.projects(api)

    def runs(request: Request, api: Api) -> dict[str, Any]:
        q = request.query_params
        return data.runs_page(
            api,
            project=q.get("project"),
            where=q.get("where"),
            order_by=_list(request, "order_by"),
            limit=_int(request, "limit", 50) or 50,
            offset=_int(request, "offset", 0) or 0,
        )

    def run(request: Request, api: Api) -> dict[str, Any]:
        return data.run_page(api, request.path_params["run_id"], _project(request))

    def history(request: Request, api: Api) -> dict[str, Any]:
        key = request.query_params.get("key")
        if not key:
            raise ValueError("name the metric: ?key=loss")
        samples = _int(request, "samples", 1000)
        return series.history(
            api,
            request.path_params["run_id"],
            key,
            project=_project(request),
            x=_x(request),
            samples=None if samples == 0 else samples,
            min_step=_int(request, "min_step", None),
            max_step=_int(request, "max_step", None),
            x_range=_x_range(request),
        )

    def system(request: Request, api: Api) -> dict[str, Any]:
        return data.system_metrics(api, request.path_params["run_id"], _project(request))

    def histograms(request: Request, api: Api) -> dict[str, Any]:
        return data.histograms(api, request.path_params["run_id"], _project(request))

    def alerts(request: Request, api: Api) -> dict[str, Any]:
        q = request.query_params
        return data.alerts(
            api, q.get("project"), q.get("run_id"), _int(request, "limit", 100) or 100
        )

    def compare(request: Request, api: Api) -> dict[str, Any]:
        return series.compare_meta(api, _list(request, "runs"), _project(request))

    def compare_history(request: Request, api: Api) -> dict[str, Any]:
        key = request.query_params.get("key")
        if not key:
            raise ValueError("name the metric: ?key=loss")
        return series.compare_history(
            api,
            _list(request, "runs"),
            key,
            project=_project(request),
            x=_x(request),
            samples=_int(request, "samples", 500) or 500,
            group_by=request.query_params.get("group_by") or None,
            min_step=_int(request, "min_step", None),
            max_step=_int(request, "max_step", None),
            x_range=_x_range(request),
        )

    def sql(request: Request, api: Api) -> dict[str, Any]:
        with readers.borrow() as reader:
            return data.sql(
                reader,
                request.query_params.get("q", ""),
                _int(request, "limit", data.SQL_ROWS) or data.SQL_ROWS,
            )

    def sql_scope(request: Request, api: Api) -> dict[str, Any]:
        with readers.borrow() as reader:
            return data.sql_scope(reader)

    def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    def health(request: Request) -> Response:
        return JSON({"ok": True})

    def api_unknown(request: Request) -> Response:
        return _error(404, f"no endpoint {request.url.path}")

    routes = [
        Route("/", index),
        Route("/api/health", health),
        Route("/api/projects", endpoint(projects)),
        Route("/api/runs", endpoint(runs)),
        Route("/api/runs/{run_id:str}", endpoint(run)),
        Route("/api/runs/{run_id:str}/history", endpoint(history)),
        Route("/api/runs/{run_id:str}/system", endpoint(system)),
        Route("/api/runs/{run_id:str}/histograms", endpoint(histograms)),
        Route("/api/alerts", endpoint(alerts)),
        Route("/api/compare", endpoint(compare)),
        Route("/api/compare/history", endpoint(compare_history)),
        Route("/api/sql", endpoint(sql)),
        Route("/api/sql/scope", endpoint(sql_scope)),
        Route("/api/{rest:path}", api_unknown),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        apis.close()
        readers.close()

    app = Starlette(
        routes=routes,
        # gzip: a chart's float columns shrink to about a third.
        middleware=[
            Middleware(Guard, token=token),
            Middleware(_Headers),
            Middleware(GZipMiddleware, minimum_size=1024),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


class _Headers:
    """Adds the security headers to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
