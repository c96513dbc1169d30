"""A TCP proxy for tests of links that break or are slow."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress


class Proxy:
    """127.0.0.1:<port> → upstream. ``cut()`` drops every connection and refuses new ones
    (accepted and closed at once) until ``restore()``. ``uplink_delay_s`` holds every chunk
    a client sends that long before passing it on (the answers pass at once): a slow or
    busy link, on which a request is still on its way after the client sent it."""

    def __init__(self, upstream: tuple[str, int], uplink_delay_s: float = 0.0) -> None:
        self.upstream = upstream
        self.uplink_delay_s = uplink_delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.open = threading.Event()
        self.open.set()
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.conns |= {client, server}
            for a, b, delay in ((client, server, self.uplink_delay_s), (server, client, 0.0)):
                threading.Thread(target=self._pump, args=(a, b, delay), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while data := src.recv(65536):
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self.lock:
                self.conns -= {src, dst}

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.stopped = True
        self.cut()
        self.listener.close()


# ------------------------------------------------------------------ input and publishing
