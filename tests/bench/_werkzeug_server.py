"""The old serving path, for the serving bench's baseline (run as ``python -m
tests.bench._werkzeug_server PORT``): the app behind werkzeug's threaded development
server in one process, as ``wangge run`` served it before gunicorn (settings from the
environment, like gunicorn's workers)."""

from __future__ import annotations

import sys

from werkzeug.serving import make_server

from dashboard.app import create_app
from pipelines.settings import load_settings


def main() -> None:
    app = create_app(load_settings())
    make_server("127.0.0.1", int(sys.argv[1]), app.server, threaded=True).serve_forever()


if __name__ == "__main__":
    main()
