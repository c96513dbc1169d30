"""An embedded MQTT broker for laptops and tests (``wangge run`` when no broker is set).

Debian's ``mosquitto`` binary when it is installed, else the pure-Python ``amqtt``
broker (a PyPI dependency) in a child process. Either listens on 127.0.0.1 only, on a
free port, without persistence, and watches its parent: a ``kill -9`` of the parent
leaves no orphan broker behind. No internet is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


class EmbeddedBroker:
    def __init__(self, workdir: str | Path, port: int | None = None, prefer: str = "auto") -> None:
        self.workdir = Path(workdir)
        self.port = port or _free_port()
        self.prefer = prefer  # "auto", "mosquitto" or "amqtt"
        self.kind = ""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        binary = mosquitto_binary() if self.prefer in ("auto", "mosquitto") else None
        if binary:
            self.kind = "mosquitto"
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                # a burst of camera events is queued for the subscriber, not dropped (the
                # default keeps 1,000 QoS 1 messages per client)
                "max_queued_messages 1000000\nmax_inflight_messages 100\n"
                f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            )
            return [binary, "-c", str(conf)]
        self.kind = "amqtt"
        return [sys.executable, "-m", "pipelines.gateway.broker", "--port", str(self.port)]

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = self._command()
        script = (
            '"$@" & child=$!; '
            f"while kill -0 {os.getpid()} 2>/dev/null && kill -0 $child 2>/dev/null; "
            "do sleep 1; done; kill $child 2>/dev/null; wait $child"
        )
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", script, "wangge-mqtt", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"embedded MQTT broker ({self.kind}) did not start"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve_amqtt(port: int) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description="the amqtt broker on 127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    asyncio.run(_serve_amqtt(p.parse_args().port))


if __name__ == "__main__":
    main()
