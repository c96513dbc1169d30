"""The time machine in a browser: a shared ``/?at=`` link shows the past, marked as such,
with values that differ from live; play steps the moment on; bad values say so."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import click, count, login, shot, text, viewport, wait, wait_text
from tests.clock import named

pytestmark = pytest.mark.browser


def reports_kpi(driver: Any) -> str:
    """The first KPI tile (reports today) as shown now."""
    return text(driver, "#pan-kpis .kpi .value")


def test_a_past_link_shows_the_past_and_play_steps_on(
    chrome: Any, server_url: str, artifacts: Path, request: pytest.FixtureRequest
) -> None:
    # The server holds the 20 minutes before its moment (09:40–10:00 on the default
    # moment); 15 minutes before it, a quarter of today's reports had come in.
    moment = named(request.config.getoption("moment"))
    past = moment.local.replace(second=0, microsecond=0) - timedelta(minutes=15)
    at = past.strftime("%Y-%m-%dT%H:%M")
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 900)
    chrome.get(server_url + "/")
    wait(chrome).until(lambda d: count(d, "#pan-kpis .kpi") == 9)
    live = reports_kpi(chrome)
    assert "历史回看" not in text(chrome, ".tm-bar")  # live: no past mark

    chrome.get(server_url + f"/?at={at}")
    mark = wait_text(chrome, "#pan-tm-mark", past.strftime("%Y-%m-%d %H:%M"))
    assert "历史回看" in mark
    wait(chrome).until(lambda d: count(d, "#pan-kpis .kpi") == 9)
    wait(chrome).until(lambda d: reports_kpi(d) != live)
    then = int(reports_kpi(chrome).replace(",", ""))
    assert then < int(live.replace(",", ""))  # fewer reports by then than by now
    assert "返回实时" in text(chrome, "#pan-tm-live")
    shot(chrome, artifacts, "time-machine-past")

    # play: the moment moves on (a minute of city time per second at 60×)
    click(chrome, "#pan-tm-play")
    wait(chrome).until(lambda d: past.strftime("%H:%M") not in text(d, "#pan-tm-mark"))
    assert "at=" in chrome.current_url and at not in chrome.current_url
    click(chrome, "#pan-tm-play")  # pause

    # a bad value: said in words, and live is shown
    chrome.get(server_url + "/?at=yesterday-ish")
    wait_text(chrome, ".tm-problem", "yesterday-ish")
    wait(chrome).until(lambda d: count(d, "#pan-kpis .kpi") == 9)
