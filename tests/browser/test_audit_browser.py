"""The audit log in the browser: the administrator lands on it inside the app's shell
(header, menu), in Chinese and English, rows in local time with ISO dates and details as
key: value; a district commander opening it is refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import (
    count,
    forget_session,
    login,
    shot,
    text,
    texts,
    viewport,
    wait,
    wait_text,
)

pytestmark = pytest.mark.browser

ISO_LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def test_admin_reads_the_audit_log_in_the_shell(
    chrome: Any, server_url: str, artifacts: Path
) -> None:
    viewport(chrome, 1600, 900)
    login(chrome, server_url, "admin")
    wait(chrome).until(lambda d: d.current_url.endswith("/admin/audit"))
    wait(chrome).until(lambda d: count(d, "table.audit tbody tr"))
    assert "审计日志" in text(chrome, ".wg-header .wg-nav")  # the shell's header and menu
    assert "审计链完整" in text(chrome, "#aud-check")
    heads = texts(chrome, "table.audit th")
    assert heads == ["时间", "操作人", "角色", "范围", "操作", "对象", "详情"]
    times = texts(chrome, "table.audit td.aud-at")
    assert times and all(ISO_LOCAL.match(x.strip()) for x in times), times
    body = text(chrome, "table.audit tbody")
    assert "登录" in body and "{" not in body  # words, and no raw JSON
    assert count(chrome, "table.audit .aud-detail dt")  # details as key: value
    shot(chrome, artifacts, "audit-zh")
    chrome.get(server_url + "/lang/en")
    chrome.get(server_url + "/admin/audit")
    wait_text(chrome, "table.audit thead", "Actor")
    assert "Audit log" in text(chrome, ".wg-header .wg-nav")
    assert "Signed in" in text(chrome, "table.audit tbody")
    shot(chrome, artifacts, "audit-en")
    chrome.get(server_url + "/lang/zh-CN")


def test_a_commander_is_refused(chrome: Any, server_url: str) -> None:
    forget_session(chrome, server_url)
    login(chrome, server_url, "xuanwu")
    chrome.get(server_url + "/admin/audit")
    wait_text(chrome, "h2", "无权访问")  # the guard's refusal page, before any Dash
    assert count(chrome, "table.audit") == 0
    assert "审计链" not in (chrome.page_source or "")
