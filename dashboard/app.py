"""The Dash app: ``create_app(settings)``; ``server`` for gunicorn (dashboard.app:server)."""

from __future__ import annotations

from dash import Dash, html

from pipelines.settings import Settings, load_settings


def create_app(settings: Settings) -> Dash:
    app = Dash(__name__, serve_locally=True, title="网格 Wangge")
    app.layout = html.Div([html.H1("网格 Wangge"), html.P("全景网格 — coming")])
    return app


def _server():
    return create_app(load_settings()).server


server = _server()
