"""The operator dashboard as a FastAPI app over a `DashboardSource` (ROS-free).

    GET  /                       the page (HTML with its script and styles inline; `?token=` accepted)
    GET  /api/status             node liveness, control loop, learner, recorder, weights
    GET  /api/episodes           episode rows (+ filters task, source, success, limit) and success curve
    GET  /api/curves             success rate vs environment steps, learner losses vs updates
    GET  /api/events             server-sent events: `status` every period, `episodes` / `losses` on change
    POST /api/episode/start      {}                      -> /recorder/start
    POST /api/episode/stop       {"success": bool}       -> /recorder/stop
    POST /api/episode/discard    {}                      -> /recorder/discard
    POST /api/episodes/label     {"index": n|null, "success": bool|null}  (null index: the last episode)
    POST /api/sim/reset          {}                      -> /sim/reset
    POST /api/learner/pause      {"paused": bool}        -> /learner/pause
    POST /api/policy/hold        {"hold": bool}          -> /policy/hold

Everything is served by the app itself (no CDN: robot lab networks are often offline). Security
is `security.py`'s, enforced by `SecurityMiddleware` before any route, body parsing included.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any, Literal

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coirl_ros.configs.dashboard import DashboardConfig
from coirl_ros.constants import EpisodeSource
from coirl_ros.dashboard import security
from coirl_ros.dashboard.models import (
    CommandResult,
    EmptyRequest,
    EpisodeList,
    EpisodeRow,
    HoldRequest,
    LabelRequest,
    PauseRequest,
    StatusSnapshot,
    StopRequest,
)
from coirl_ros.dashboard.source import CommandError, DashboardSource

PAGE_PATH = "/"
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # the page URL carries the token: never send it onwards
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
]


def _page_assets() -> tuple[str, str, str]:
    static = resources.files("coirl_ros.dashboard") / "static"
    return tuple((static / name).read_text(encoding="utf-8") for name in ("index.html", "app.css", "app.js"))


class SecurityMiddleware:
    """Host check, token check and (for anything but GET/HEAD) same-origin JSON, before any route."""

    def __init__(self, app: ASGIApp, token: str, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            if not security.host_allowed(request.headers.get("host", ""), self.allowed_hosts):
                raise _Refusal(400, f"Host {request.headers.get('host', '')!r} not allowed (allowed_hosts)")
            supplied = security.bearer_token(request)
            if supplied is None and scope["path"] == PAGE_PATH:
                supplied = request.query_params.get("token")
            security.check_token(supplied, self.token)
            if request.method not in _SAFE_METHODS:
                security.check_same_origin(request)
                security.check_json(request)
        except Exception as err:  # HTTPException from the checks, or _Refusal
            status = getattr(err, "status_code", 400)
            detail = getattr(err, "detail", str(err))
            headers = dict(getattr(err, "headers", None) or {})
            response = JSONResponse({"detail": detail}, status, headers=headers)
            await response(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                present = {k.lower() for k, _ in message["headers"]}
                message["headers"] = [*message["headers"], *(h for h in _HEADERS if h[0] not in present)]
            await send(message)

        return wrapped


class _Refusal(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(
    source: DashboardSource, config: DashboardConfig | None = None, token: str | None = None
) -> FastAPI:
    """The dashboard over `source`; `token` None = the config's, or a fresh one (see `app.state.token`).

    `app.state.closing` (a threading.Event) ends the live-update streams: set it before stopping
    the server, so open pages do not hold the shutdown up.
    """
    config = config or DashboardConfig()
    token = token or security.resolve_token(config)
    # No interactive docs: they load scripts from a CDN and would be one more endpoint to guard.
    app = FastAPI(title="coirl_ros dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.token = token
    app.state.closing = threading.Event()
    app.add_middleware(SecurityMiddleware, token=token, allowed_hosts=security.allowed_host_names(config))
    template, css, script = _page_assets()

    @app.exception_handler(CommandError)
    async def _command_error(request: Request, err: CommandError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = json.loads(json.dumps(err.errors(), default=str))
        return JSONResponse({"detail": _validation_message(err), "errors": errors}, 422)

    # ---- the page ------------------------------------------------------------------------------
    @app.get(PAGE_PATH, response_class=HTMLResponse)
    def page() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = (
            template.replace("{{nonce}}", nonce)
            .replace("{{css}}", css)
            .replace("{{script}}", script)
            .replace("{{period_ms}}", str(int(config.update_period_s * 1000)))
        )
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self';"
            " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return HTMLResponse(html, headers={"content-security-policy": csp})

    # ---- reading -------------------------------------------------------------------------------
    @app.get("/api/status")
    def status() -> StatusSnapshot:
        return source.status()

    @app.get("/api/episodes")
    def episodes(
        task: str | None = None,
        source_filter: Annotated[EpisodeSource | None, Query(alias="source")] = None,
        success: Literal["true", "false", "none"] | None = None,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> EpisodeList:
        listing = source.episodes()
        rows = listing.episodes
        if task is not None:
            rows = [r for r in rows if r.task == task]
        if source_filter is not None:
            rows = [r for r in rows if r.source == source_filter]
        if success is not None:
            wanted = {"true": True, "false": False, "none": None}[success]
            rows = [r for r in rows if r.success is wanted]
        if limit is not None:
            rows = rows[-limit:]  # the newest
        return listing.model_copy(update={"episodes": rows})

    @app.get("/api/curves")
    def curves() -> dict[str, Any]:
        return {"success": source.episodes().curve, "losses": source.loss_curves()}

    @app.get("/api/events", response_class=EventSourceResponse)
    async def events(request: Request) -> AsyncIterator[ServerSentEvent]:
        closing: threading.Event = app.state.closing
        episodes_seen = losses_seen = None
        yield ServerSentEvent(comment="coirl dashboard", retry=2000)
        while not closing.is_set() and not await request.is_disconnected():
            yield ServerSentEvent(event="status", data=await run_in_threadpool(source.status))
            listing = await run_in_threadpool(source.episodes)
            if listing.revision != episodes_seen:
                episodes_seen = listing.revision
                yield ServerSentEvent(event="episodes", data=listing)
            losses = await run_in_threadpool(source.loss_curves)
            if losses.revision != losses_seen:
                losses_seen = losses.revision
                yield ServerSentEvent(event="losses", data=losses)
            deadline = time.monotonic() + config.update_period_s
            while not closing.is_set() and time.monotonic() < deadline:
                await anyio.sleep(min(0.1, config.update_period_s))

    # ---- controls (sync: service calls block a worker thread, never the event loop) ------------
    @app.post("/api/episode/start")
    def start_episode(body: EmptyRequest) -> CommandResult:
        return source.start_episode()

    @app.post("/api/episode/stop")
    def stop_episode(body: StopRequest) -> CommandResult:
        return source.stop_episode(body.success)

    @app.post("/api/episode/discard")
    def discard_episode(body: EmptyRequest) -> CommandResult:
        return source.discard_episode()

    @app.post("/api/episodes/label")
    def label_episode(body: LabelRequest) -> EpisodeRow:
        return source.label_episode(body.index, body.success)

    @app.post("/api/sim/reset")
    def reset_sim(body: EmptyRequest) -> CommandResult:
        return source.reset_sim()

    @app.post("/api/learner/pause")
    def pause_learner(body: PauseRequest) -> CommandResult:
        return source.pause_learner(body.paused)

    @app.post("/api/policy/hold")
    def hold(body: HoldRequest) -> CommandResult:
        return source.hold(body.hold)

    return app
