"""A small asyncio client of the push server's event streams (HTTP/1.1, chunked), for the
tests and the benches (thousands of them in one process; no client library needed)."""

from __future__ import annotations

import asyncio
import contextlib
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

    def __init__(self, app: object, port: int) -> None:
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
