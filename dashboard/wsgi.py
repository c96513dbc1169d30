"""WSGI middleware in front of the Flask app: request size limits and trusted proxies.

* :class:`BodyLimit` refuses a request body over its path's limit with 413 before anything
  reads it: a declared ``Content-Length`` over the limit is refused without reading a
  byte; a streamed (chunked) body is read up to the limit plus one byte, and refused as
  soon as it goes past (so memory never grows by more than the limit). A body within the
  limit is handed on as a plain, length-delimited stream.
* :class:`TrustedProxies` honours ``X-Forwarded-For/-Proto/-Host/-Port`` only for
  ``proxy_count`` proxies, and only when the request came from one of the configured
  proxy addresses (werkzeug's ProxyFix does the rewriting). Without a configured proxy
  the headers are ignored (werkzeug's default).
"""

from __future__ import annotations

import io
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CHUNK = 64 * 1024

_BODY = b'{"error": "request too large", "why": "the request body is over the limit"}'


def _refuse(start_response: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),  # the unread rest of the body is never read
        ],
    )
    return [body]


class BodyLimit:
    """Refuse request bodies over ``limit_for(path)`` bytes (413), before parsing."""

    def __init__(self, app: WSGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        limit = self.limit_for(environ.get("PATH_INFO", "") or "")
        declared = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
        if declared and not chunked:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                return _refuse(start_response, "400 Bad Request", b'{"error": "bad length"}')
            if length > limit:
                return _refuse(start_response, "413 Request Entity Too Large", _BODY)
            return self.app(environ, start_response)
        if chunked:
            stream = environ["wsgi.input"]
            buf = io.BytesIO()
            while buf.tell() <= limit:
                piece = stream.read(min(CHUNK, limit + 1 - buf.tell()))
                if not piece:
                    break
                buf.write(piece)
            if buf.tell() > limit:
                return _refuse(start_response, "413 Request Entity Too Large", _BODY)
            environ["wsgi.input"] = io.BytesIO(buf.getvalue())
            environ["CONTENT_LENGTH"] = str(buf.tell())
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["wsgi.input_terminated"] = False
        return self.app(environ, start_response)


def parse_networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``"10.0.0.5, 10.1.0.0/16"`` → networks (ValueError for a bad entry)."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part:
            out.append(ipaddress.ip_network(part, strict=False))
    return out


class TrustedProxies:
    """ProxyFix for ``count`` proxies, applied only to requests from ``networks`` (all
    peers when empty); everyone else's X-Forwarded-* headers are ignored."""

    def __init__(self, app: WSGIApp, count: int, networks: str) -> None:
        self.app = app
        self.networks = parse_networks(networks)
        self.fixed = ProxyFix(app, x_for=count, x_proto=count, x_host=count, x_port=count)

    def trusted(self, peer: str) -> bool:
        if not self.networks:
            return True
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(addr in n for n in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.trusted(str(environ.get("REMOTE_ADDR", ""))):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)
