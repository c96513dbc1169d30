"""What `wangge run` prints and keeps for later: the demo accounts and URLs (printed at
start, again when Enter is pressed, and by `wangge status` from the run file), and the
dashboard's request log, which goes to ``<var_dir>/log/requests.log`` instead of burying
the console (on the console too with ``-v``)."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pipelines.settings import Settings

RUN_FILE = "run.json"  # in var_dir, while `wangge run` runs (mode 0600: it holds passwords)
REQUEST_LOG = Path("log") / "requests.log"


def request_log(settings: Settings) -> Path:
    """Where the dashboard's per-request lines go (gunicorn's access log, a rotating file:
    ``dashboard/gunicorn_conf.py``; ``wangge -v run`` echoes them on the console)."""
    path = settings.path(settings.run.var_dir) / REQUEST_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def accounts_text(rows: Sequence[Sequence[str]], url: str, gateway_url: str) -> str:
    """The demo accounts (role · scope · sign in) and the URLs, as printed (pure)."""
    lines = ["", "  demo accounts (role · scope · sign in):"]
    for username, role, scope, secret in rows:
        if role == "wall":
            lines.append(f"    {role:18s} {scope:12s} {url}wall?token={secret}")
        else:
            lines.append(f"    {role:18s} {scope:12s} {username} / {secret}")
    lines += ["", f"  ➜ Dashboard: {url}", f"  ➜ Gateway:   {gateway_url}"]
    return "\n".join(lines) + "\n"


def write_run_file(settings: Settings, info: dict[str, Any]) -> Path:
    """Record the running instance (URLs, embedded Redis URL, demo accounts) for
    `wangge status`; readable by the owner only."""
    path = settings.path(settings.run.var_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({**info, "pid": os.getpid()}, f, ensure_ascii=False)
    tmp.replace(path)
    return path


def remove_run_file(settings: Settings) -> None:
    path = settings.path(settings.run.var_dir) / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if info.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def read_run_file(settings: Settings) -> dict[str, Any] | None:
    """The running `wangge run`'s record, or None (none, or its process is gone)."""
    path = settings.path(settings.run.var_dir) / RUN_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)  # still running?
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def on_enter(
    show: Callable[[], None], stop: threading.Event, stream: TextIO | None = None
) -> threading.Thread | None:
    """Call ``show`` for every line read from stdin (Enter pressed) until ``stop`` or the
    end of input; nothing when there is no stdin."""
    src = stream if stream is not None else sys.stdin
    if src is None or src.closed:
        return None

    def loop() -> None:
        for _line in src:
            if stop.is_set():
                return
            show()

    t = threading.Thread(target=loop, name="console", daemon=True)
    t.start()
    return t
