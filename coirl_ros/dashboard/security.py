"""Who may use the dashboard: a bearer token on every request, same-origin JSON for every control.

The threat is not only someone on the network: any web page open in the operator's browser can send
requests to `http://127.0.0.1:<port>`. So:

- every endpoint needs the token (`Authorization: Bearer <token>`; the page itself also takes
  `?token=` so the printed URL opens it, then sends the header on every call). A missing token is a
  401, a wrong one a 403; the token is compared in constant time and never put in a cookie, so a
  browser never attaches it to a request another site triggers;
- controls (POST) additionally need `Content-Type: application/json` (a cross-site HTML form cannot
  send that, and cross-site `fetch` with it or with an Authorization header needs a CORS preflight,
  which this app never grants), and are refused when the browser says the request is cross-site
  (`Sec-Fetch-Site`) or comes from another origin (`Origin`);
- on a loopback-only server the Host header must name this machine (localhost, 127.0.0.1, ::1 or a
  configured name): a DNS-rebinding page cannot make its own domain resolve to the dashboard.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from coirl_ros.configs.dashboard import DashboardConfig

TOKEN_HEADER = "authorization"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def resolve_token(config: DashboardConfig) -> str:
    """The configured token, or a fresh one (192 bits) when the config leaves it empty."""
    return config.token or secrets.token_urlsafe(24)


def bearer_token(request: Request) -> str | None:
    value = request.headers.get(TOKEN_HEADER, "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_token(supplied: str | None, token: str) -> None:
    """401 without a token, 403 with a wrong one."""
    if not supplied:
        raise HTTPException(
            401,
            "missing token: send 'Authorization: Bearer <token>' (the token is printed with the URL"
            " when dashboard_node starts)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(supplied.encode(), token.encode()):
        raise HTTPException(403, "invalid token")


def check_same_origin(request: Request) -> None:
    """403 for a control sent from another site (browsers say so in Sec-Fetch-Site and Origin)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin != f"{request.url.scheme}://{host}":
            raise HTTPException(403, f"request from another origin refused (Origin: {origin})")


def check_json(request: Request) -> None:
    """415 unless the body is declared JSON (forms and text/plain are what cross-site pages can send)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise HTTPException(
            415,
            f"controls take a JSON object body with Content-Type: application/json (got {media or 'none'!r})",
        )


def allowed_host_names(config: DashboardConfig) -> frozenset[str] | None:
    """Host header names a loopback-only server accepts; None = any (the check is off)."""
    if "*" in config.allowed_hosts or not config.loopback_only:
        return None
    return LOCAL_HOSTS | {config.host.lower()} | {h.lower() for h in config.allowed_hosts}


def host_allowed(host_header: str, allowed: Iterable[str] | None) -> bool:
    if allowed is None:
        return True
    try:
        name = urlsplit(f"//{host_header}").hostname  # strips the port and IPv6 brackets
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return name is not None and name.lower() in allowed
