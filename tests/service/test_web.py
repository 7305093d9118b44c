"""The web page over HTTP: login, session cookie flags, CSRF on state changes, rendering."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from service_helpers import Server, tiny_model, upload

TINY = tiny_model().SerializeToString()


def _csrf(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match, html[:500]
    return match.group(1)


def test_login_session_cookie_and_csrf(tmp_path: Path) -> None:
    srv = Server(tmp_path / "store", "--workers", "1", "--api-key", "k3y").start()
    try:
        with httpx.Client(base_url=srv.url, follow_redirects=False, timeout=30) as c:
            r = c.get("/")
            assert r.status_code == 303 and r.headers["location"] == "/login"
            page = c.get("/login")
            assert '<label for="api_key">API key</label>' in page.text
            token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            r = c.post("/login", data={"api_key": "wrong", "token": token})
            assert r.status_code == 303 and r.headers["location"] == "/login?error=1"
            assert "eq_session" not in c.cookies
            r = c.post("/login", data={"api_key": "k3y", "token": "forged"})
            assert r.status_code == 403
            r = c.post("/login", data={"api_key": "k3y", "token": token})
            assert r.status_code == 303 and r.headers["location"] == "/"
            cookie = r.headers["set-cookie"]
            assert cookie.startswith("eq_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
            page = c.get("/")
            assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
            csrf = _csrf(page.text)
            assert c.get("/api/v1/models").status_code == 200  # the session authenticates reads
            files = {"file": ("w.onnx", TINY)}
            r = c.post("/api/v1/models", files=files, data={"name": "web"})
            assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
            r = c.post("/api/v1/models", files=files, data={"name": "web"}, headers={"X-CSRF-Token": "nope"})
            assert r.status_code == 403
            r = c.post("/api/v1/models", files=files, data={"name": "web"}, headers={"X-API-Key": "any"})
            assert r.status_code == 403  # a wrong key beside the session cookie does not stand in for CSRF
            r = c.post("/api/v1/models", files=files, data={"name": "web"}, headers={"Origin": "null"})
            assert r.status_code == 403 and "cross-site" in r.json()["detail"]
            r = c.post("/api/v1/models", files=files, data={"name": "web"}, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 201, r.text
            assert ">web</td>" in c.get("/").text
            r = c.post("/logout", headers={"X-CSRF-Token": csrf})
            assert r.status_code == 303
            c.cookies.clear()
            assert c.get("/api/v1/models").status_code == 401
        with httpx.Client(base_url=srv.url, timeout=30) as other:  # a stolen page token alone is no session
            assert (
                other.post("/api/v1/models", files=files, headers={"X-CSRF-Token": csrf}).status_code == 401
            )
    finally:
        srv.stop()


def test_page_without_an_api_key_still_has_csrf(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        page = c.get("/")
        assert page.status_code == 200 and "eq_session" in c.cookies
        csrf = _csrf(page.text)
        for label in ('for="model-file"', 'for="dataset-file"', 'for="run-model"', 'for="run-target"'):
            assert label in page.text
        r = c.delete("/api/v1/models/does-not-exist")
        assert r.status_code == 403  # the cookie is there, the token is not
        assert c.delete("/api/v1/models/does-not-exist", headers={"X-CSRF-Token": csrf}).status_code == 404
    with server.client() as api:  # a plain API client (no cookie) is unaffected
        assert upload(api, "models", "nocookie", TINY, "n.onnx", overwrite="true").status_code == 201
