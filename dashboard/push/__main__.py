"""``python -m dashboard.push [--port N]``: the push server (see ``dashboard/push``)."""

from __future__ import annotations

import argparse
import logging

from dashboard.push.server import serve
from pipelines.ops import lifeline
from pipelines.settings import load_settings


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.push")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    lifeline.watch_supervisor()  # started by `wangge run`: ends with it
    return serve(load_settings(), args.port)


if __name__ == "__main__":
    raise SystemExit(main())
