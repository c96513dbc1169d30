"""Request size limits, before anything reads the body: an oversized form to ``/login`` or
an oversized Dash callback is a 413 at once, with its declared length or as a chunked
stream, and the body is never read beyond the limit (nothing to parse, no memory)."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import redis
from dash import Dash
from sqlalchemy import Engine
from werkzeug.serving import make_server
from werkzeug.test import EnvironBuilder, run_wsgi_app

from dashboard.app import create_app
from pipelines.city.geography import City
from pipelines.settings import Settings
from tests.conftest import sign_in_client

pytestmark = pytest.mark.integration

MB = 1024 * 1024
HUGE = 200 * MB  # the body size of the report


@pytest.fixture
def app(live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis) -> Dash:
    return create_app(live_settings, city=city, r=rclient)


class Body(io.RawIOBase):
    """A body of ``size`` bytes made on demand, counting what was read of it."""

    def __init__(self, size: int, byte: bytes = b"a") -> None:
        self.size, self.byte, self.read_bytes = size, byte, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.size - self.read_bytes)
        buf[:n] = self.byte * n
        self.read_bytes += n
        return n


def limits(settings: Settings) -> tuple[int, int]:
    return settings.auth.max_body_kb * 1024, settings.auth.max_callback_kb * 1024


def post(c: Any, path: str, body: Body, *, chunked: bool, **headers: str) -> int:
    """POST ``body`` through the whole WSGI stack (as a server would hand it over: a
    declared length, or a chunked stream already de-chunked); the status code."""
    environ = EnvironBuilder(path=path, method="POST", headers=headers).get_environ()
    cookie = c.get_cookie("wg_session")
    if cookie is not None:
        environ["HTTP_COOKIE"] = f"wg_session={cookie.value}"
    environ["wsgi.input"] = body
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
        environ.pop("CONTENT_LENGTH", None)
    else:
        environ["CONTENT_LENGTH"] = str(body.size)
    app_iter, status, _headers = run_wsgi_app(c.application, environ, buffered=True)
    b"".join(app_iter)
    return int(status.split()[0])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_login_form_is_refused_unread(
    app: Dash, live_settings: Settings, chunked: bool
) -> None:
    form_limit, _ = limits(live_settings)
    body = Body(HUGE)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert post(app.server.test_client(), "/login", body, chunked=chunked, **form) == 413
    # declared too large: not a byte read; streamed: not a byte beyond the limit
    assert body.read_bytes == (form_limit + 1 if chunked else 0)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_callbacks_have_their_own_larger_limit(
    app: Dash, live_settings: Settings, chunked: bool
) -> None:
    form_limit, callback_limit = limits(live_settings)
    assert callback_limit > form_limit
    c = sign_in_client(app.server.test_client(), "city_leader", "320100", "leader")
    json = {"Content-Type": "application/json"}
    over = Body(callback_limit + 1, b" ")
    assert post(c, "/_dash-update-component", over, chunked=chunked, **json) == 413
    assert over.read_bytes == (callback_limit + 1 if chunked else 0)
    # within the callback limit (but over the form limit) the body reaches Dash's endpoint
    within = Body(form_limit * 2, b" ")
    status = post(c, "/_dash-update-component", within, chunked=chunked, **json)
    assert status != 413 and within.read_bytes == within.size
    # … and the same size to any other route is too large
    assert post(c, "/logout", Body(form_limit * 2), chunked=chunked) == 413


def test_a_small_form_still_works(app: Dash) -> None:
    c = app.server.test_client()
    page = c.get("/login")
    assert page.status_code == 200
    resp = c.post("/login", data={"username": "x", "password": "y", "csrf": "z"})
    assert resp.status_code == 400  # reached the form: a stale CSRF token, not a 413


@pytest.fixture
def served(app: Dash) -> Iterator[int]:
    """The app behind werkzeug's real HTTP server (threaded), on a free port."""
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return data


def test_a_real_server_answers_413_before_the_body_is_sent(served: int) -> None:
    """Over HTTP: the client announces 200 MB and waits; the answer comes at once, and the
    process did not grow (nothing was read, nothing parsed)."""
    rss = psutil.Process().memory_info().rss
    with socket.create_connection(("127.0.0.1", served), timeout=10) as sock:
        sock.sendall(
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {HUGE}\r\n\r\n".encode()
            + b"username=" + b"a" * 65536
        )  # fmt: skip
        head = _response_head(sock)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert psutil.Process().memory_info().rss - rss < 50 * MB


def test_a_real_server_stops_reading_a_chunked_body_at_the_limit(served: int) -> None:
    """200 MB streamed in chunks: the app reads up to the limit and answers 413; the
    process does not grow by the body (werkzeug's server discards the rest, in pieces,
    so that the client sees the answer)."""
    rss = psutil.Process().memory_info().rss
    chunk = b"a" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with socket.create_connection(("127.0.0.1", served), timeout=30) as sock:
        sock.sendall(
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        with contextlib.suppress(OSError):  # the server may close before the end
            for _ in range(HUGE // len(chunk)):
                sock.sendall(frame)
            sock.sendall(b"0\r\n\r\n")
        head = _response_head(sock)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert psutil.Process().memory_info().rss - rss < 50 * MB
