"""A small asyncio client of the push server's event streams (HTTP/1.1, chunked), for the
tests and the benches (thousands of them in one process; no client library needed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Event:
    event: str
    id: str
    data: bytes


@dataclass
class SseStream:
    status: int
    body: bytes  # a refusal's body (empty for an open stream)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    chunked: bool = False
    buf: bytearray = field(default_factory=bytearray)
    ended: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    async def _more(self) -> bool:
        assert self.reader is not None
        if self.chunked:
            size_line = await self.reader.readline()
            if not size_line:
                return False
            size = int(size_line.strip().split(b";")[0] or b"0", 16)
            if size == 0:
                return False
            chunk = await self.reader.readexactly(size + 2)
            self.buf += chunk[:-2]
            return True
        data = await self.reader.read(65536)
        if not data:
            return False
        self.buf += data
        return True

    async def next(self) -> Event | None:
        """The next event (comments and the retry line skipped); None when it closed."""
        while True:
            seen = 0
            while (end := self.buf.find(b"\n\n", seen)) < 0:
                seen = max(0, len(self.buf) - 1)  # search only what is new
                if self.ended or not await self._more():
                    self.ended = True
                    return None
            block = bytes(self.buf[:end])
            del self.buf[: end + 2]
            ev = Event("message", "", b"")
            datas = []
            for line in block.split(b"\n"):
                name, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if name == b"event":
                    ev.event = value.decode()
                elif name == b"id":
                    ev.id = value.decode()
                elif name == b"data":
                    datas.append(value)
            if datas:
                ev.data = b"\n".join(datas)
                return ev

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()


async def open_stream(
    host: str, port: int, path: str, cookie: str = "", origin: str = ""
) -> SseStream:
    """GET an event stream; a non-200 answer is read whole and the connection closed."""
    reader, writer = await asyncio.open_connection(host, port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    if origin:
        lines.append(f"Origin: {origin}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    s = SseStream(status, b"", reader, writer, headers.get("transfer-encoding") == "chunked")
    s.headers = headers
    if status != 200:
        n = int(headers.get("content-length", "0") or 0)
        s.body = await reader.readexactly(n) if n else b""
        await s.close()
    return s


class PushServer:
    """The push app under a real uvicorn in a thread of this process (tests)."""

    def __init__(self, app: object, port: int, http: str = "auto") -> None:
        import threading

        import uvicorn

        self.port = port
        cfg = uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            http=http,  # "h11": frames through ASGI send (no direct write to the connection)
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> PushServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("push server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class TickReceiver(asyncio.Protocol):
    """One event stream read as its bytes arrive (benches: a thousand in one process).

    No task and no await per event: ``data_received`` takes the time once, undoes the
    chunked framing, splits the events and calls ``on_event(event, id, data_bytes,
    arrived)`` for each, ``arrived`` being ``time.time()`` when the event's last bytes
    reached this process (a tick's receipt). Only an event's head lines are parsed."""

    def __init__(self, on_event: Callable[[str, str, int, float], None]) -> None:
        self.on_event = on_event
        self.raw = bytearray()  # what arrived, not yet unframed
        self.sse = bytearray()  # the unframed event text, not yet split
        self.status = 0
        self.chunked = False
        self.left = 0  # bytes of the current chunk still to come (its CRLF included)
        self.ended = False  # the server ended the stream (last chunk) or the connection
        self.headers: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if not self.headers.done():
            self.headers.set_exception(exc or ConnectionError("closed before the headers"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        raw = self.raw
        raw += data
        pos = 0
        if not self.status:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(raw[:end]).decode("latin-1").split("\r\n")
            self.chunked = any(
                h.lower().replace(" ", "") == "transfer-encoding:chunked" for h in head[1:]
            )
            self.status = int(head[0].split()[1])
            pos = end + 4
            self.headers.set_result(self.status)
        if not self.chunked:
            self.sse += raw[pos:]
            pos = len(raw)
        while pos < len(raw) and not self.ended:
            if self.left == 0:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(raw[pos:eol]).split(b";")[0] or b"0", 16)
                pos = eol + 2
                if size == 0:
                    self.ended = True
                    break
                self.left = size + 2
            take = min(self.left, len(raw) - pos)
            payload = min(take, self.left - 2)  # the chunk's bytes before its CRLF
            if payload > 0:
                self.sse += raw[pos : pos + payload]
            self.left -= take
            pos += take
        del raw[:pos]
        self._events(now)

    def _events(self, now: float) -> None:
        sse = self.sse
        start = 0
        while (end := sse.find(b"\n\n", start)) >= 0:
            event, ident, size = "message", "", -1
            line = start
            while line < end:
                eol = sse.find(b"\n", line, end)
                eol = end if eol < 0 else eol
                name_end = sse.find(b":", line, eol)
                if name_end > line:  # a field (not a comment, not a bare name)
                    name = bytes(sse[line:name_end])
                    vstart = name_end + 1
                    if sse[vstart : vstart + 1] == b" ":
                        vstart += 1
                    if name == b"data":
                        size = end - vstart  # the rest of the block (one data line)
                        break
                    if name == b"event":
                        event = sse[vstart:eol].decode()
                    elif name == b"id":
                        ident = sse[vstart:eol].decode()
                line = eol + 1
            if size >= 0:
                self.on_event(event, ident, size, now)
            start = end + 2
        del sse[:start]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_receiver(
    host: str, port: int, path: str, cookie: str, on_event: Callable[[str, str, int, float], None]
) -> TickReceiver:
    """GET an event stream into a :class:`TickReceiver`; its status once the headers came."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: TickReceiver(on_event), host, port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    assert proto.transport is not None
    proto.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await proto.headers
    return proto
