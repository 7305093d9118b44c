"""The web page at ``/``: server-rendered Jinja2 templates plus one small script (``static/app.js``).

No build step and no vendored library.  The page lists models, datasets and jobs (rendered from
the store), and its forms call the REST API with ``fetch``: uploads, quantize / compare, cancel,
delete.  Running jobs show live progress from ``/api/v1/jobs/{id}/events`` (EventSource).

With an API key the page needs a login (``/login``: the key, checked in constant time) that sets
the session cookie ``eq_session`` (HttpOnly, SameSite=Strict).  The login form carries a token
bound to a pre-login cookie (double submit); every state-changing call from the page carries the
session's CSRF token in ``X-CSRF-Token`` (``guard``).  Without an API key the page still gets a
session, so the same CSRF rule holds.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from edgequant.recipe import METHODS, PRESETS
from edgequant.service.config import ServiceConfig, served_targets
from edgequant.service.guard import SESSION_COOKIE, Sessions, cookie_value
from edgequant.service.routes_files import list_datasets, list_models
from edgequant.service.store import JobStore, public_job

HERE = Path(__file__).parent
LOGIN_COOKIE = "eq_login"
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
templates = Jinja2Templates(directory=str(HERE / "templates"))


def _cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", path="/")


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def mount(app: FastAPI) -> None:
    """Add the page, the login routes and ``/static`` to ``app``."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def sessions(request: Request) -> Sessions:
        value: Sessions = request.app.state.sessions
        return value

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        config: ServiceConfig = request.app.state.config
        store: JobStore = request.app.state.store
        sid = cookie_value(dict(request.headers), SESSION_COOKIE)
        csrf = sessions(request).csrf(sid)
        new_sid = None
        if csrf is None:
            if config.api_key:
                return RedirectResponse("/login", status_code=303)
            new_sid, csrf = sessions(request).create()
        rows, total = store.list_jobs(status=None, kind=None, model=None, limit=100, offset=0)
        context: dict[str, Any] = {
            "csrf": csrf,
            "auth": bool(config.api_key),
            "models": list_models(request)["models"],
            "datasets": list_datasets(request)["datasets"],
            "jobs": [public_job(r) for r in rows],
            "total_jobs": total,
            "presets": list(PRESETS),
            "methods": list(METHODS),
            "targets": served_targets(),
            "max_upload_mb": config.max_upload_mb,
        }
        response = templates.TemplateResponse(request, "index.html", context)
        if new_sid is not None:
            _cookie(response, SESSION_COOKIE, new_sid, 12 * 3600)
        return _headers(response)

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request, error: str | None = None) -> Response:
        token = secrets.token_urlsafe(32)
        response = templates.TemplateResponse(
            request, "login.html", {"token": token, "error": error == "1"}, status_code=200
        )
        _cookie(response, LOGIN_COOKIE, token, 600)
        return _headers(response)

    @app.post("/login", include_in_schema=False)
    def login(request: Request, api_key: str = Form(""), token: str = Form("")) -> Response:
        config: ServiceConfig = request.app.state.config
        expected = cookie_value(dict(request.headers), LOGIN_COOKIE) or ""
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            return _headers(HTMLResponse("login form expired or forged; reload /login.", status_code=403))
        if config.api_key and not hmac.compare_digest(api_key.encode(), config.api_key.encode()):
            return RedirectResponse("/login?error=1", status_code=303)
        sid, _ = sessions(request).create()
        response = RedirectResponse("/", status_code=303)
        _cookie(response, SESSION_COOKIE, sid, 12 * 3600)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        sessions(request).drop(cookie_value(dict(request.headers), SESSION_COOKIE))
        response = RedirectResponse("/login" if request.app.state.config.api_key else "/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


__all__ = ["mount"]
