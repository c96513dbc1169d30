"""Every main page at every screen size, in both languages: the page fits the screen, the
menu collapses on a phone, the map keeps a usable height, no visible label is truncated,
and in Chinese no English word is left on screen.

One server and one browser for the module; the pages are opened as the city leader (who
may open every page). Screenshots go to ``tests/artifacts/screens-<page>-<lang>-<size>.png``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import click, count, login, shot, viewport, wait

pytestmark = [pytest.mark.browser, pytest.mark.screens]

SIZES = {
    "1080p": (1920, 1080),
    "4k": (3840, 2160),
    "tablet": (768, 1024),
    "phone": (390, 844),
}
WIDE = ("1080p", "4k")  # the wall is a 16:9 screen: it is checked at 16:9 sizes only

# page -> (path, a JS condition that holds once its data has rendered, its map's id)
PAGES: dict[str, tuple[str, str, str]] = {
    "panorama": (
        "/",
        "document.querySelectorAll('#pan-kpis .kpi').length === 9"
        " && document.querySelectorAll('#pan-cats .xtick, #pan-cats .ytick').length > 0"
        " && document.querySelectorAll('#pan-map path.leaflet-interactive').length > 0",
        "pan-map",
    ),
    "warnings": (
        "/warnings",
        "!!document.querySelector('#warn-list')"
        " && document.querySelectorAll('#warn-map path').length > 0",
        "warn-map",
    ),
    "work": (
        "/work",
        "document.querySelectorAll('#work-kpis .kpi').length > 0"
        " && document.querySelectorAll('#work-children tr').length > 1",
        "work-map",
    ),
    "assessment": (
        "/assessment",
        "document.querySelectorAll('#asm-table .ag-header-cell').length > 0"
        " && document.querySelectorAll('#asm-table .ag-row').length > 0",
        "",
    ),
    "incidents": (
        "/incidents",
        "document.querySelectorAll('#inc-grid .ag-header-cell').length > 0"
        " && document.querySelectorAll('#inc-grid .ag-row').length > 0"
        " && document.querySelectorAll('#inc-map path').length > 0",
        "inc-map",
    ),
    "wall": (
        "/wall",
        "document.querySelectorAll('#wall-kpis .kpi').length > 0"
        " && document.querySelectorAll('#wall-cats .xtick, #wall-cats .ytick').length > 0",
        "wall-map",
    ),
}

CASES = [
    pytest.param(lang, page, size, id=f"{lang}-{page}-{size}")
    for lang in ("zh-CN", "en")
    for page in PAGES
    for size in SIZES
    if page != "wall" or size in WIDE
]

# Every visible text node and placeholder, with the element it belongs to. Skipped:
# elements the user cannot see, and the parts that are not UI words: the account name
# (a user's own identifier) and the language switch (it names the other language).
VISIBLE_TEXTS = r"""
const SKIP = '#shell-user, #shell-lang-link, script, style, noscript, title';
const out = [];
const seen = el => {
  if (!el || el.closest(SKIP)) return false;
  const r = el.getBoundingClientRect();
  if (r.width < 1 || r.height < 1) return false;
  for (let e = el; e; e = e.parentElement) {
    const s = getComputedStyle(e);
    if (s.display === 'none' || s.visibility === 'hidden' || s.opacity === '0') return false;
  }
  return r.bottom > 0 && r.right > 0 && r.left < innerWidth;
};
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const t = n.nodeValue.trim();
  if (t && seen(n.parentElement)) out.push([t, n.parentElement.outerHTML.slice(0, 120)]);
}
for (const el of document.querySelectorAll('[placeholder]')) {
  if (seen(el)) out.push([el.getAttribute('placeholder'), el.outerHTML.slice(0, 120)]);
}
return out;
"""

# Visible text that does not fit its box: an element with text of its own whose content is
# wider than its box while the overflow is hidden or ellipsised; and text that its nearest
# clipping ancestor (overflow hidden, or the screen) cuts part of. Scroll boxes may scroll,
# the map and the wall's moving ticker are left out. Plotly tick labels, legend and title
# texts must lie wholly inside their chart, and a bar chart's axis shows each category's
# full name.
TRUNCATED = r"""
const out = [];
const clipping = s => ['hidden', 'clip'].includes(s.overflowX) || s.textOverflow === 'ellipsis';
const clipBox = el => {  // what the clipping ancestors leave visible (null: a scroll box)
  const box = {left: 0, top: 0, right: innerWidth, bottom: innerHeight};
  for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
    const s = getComputedStyle(a);
    if (['auto', 'scroll'].includes(s.overflowX) || ['auto', 'scroll'].includes(s.overflowY))
      return null;
    if (['hidden', 'clip'].includes(s.overflowX)) {
      const r = a.getBoundingClientRect();
      box.left = Math.max(box.left, r.left); box.right = Math.min(box.right, r.right);
      box.top = Math.max(box.top, r.top); box.bottom = Math.min(box.bottom, r.bottom);
    }
  }
  return box;
};
const SKIP = '.leaflet-container, .wall-ticker .track, .js-plotly-plot, script, style';
for (const el of document.body.querySelectorAll('*')) {
  const texts = [...el.childNodes].filter(n => n.nodeType === 3 && n.nodeValue.trim());
  if (!texts.length || el.closest(SKIP)) continue;
  const r = el.getBoundingClientRect();
  if (r.width < 2 || r.height < 2 || r.bottom < 0 || r.left >= innerWidth) continue;
  const s = getComputedStyle(el);
  if (s.visibility === 'hidden' || el.closest('[hidden]')) continue;
  const name = el.innerText.trim().slice(0, 60);
  if (clipping(s) && el.scrollWidth > el.clientWidth + 1) {
    out.push(['text', name, el.scrollWidth, el.clientWidth, el.className]);
    continue;
  }
  const box = clipBox(el);
  if (!box) continue;
  for (const n of texts) {
    const range = document.createRange();
    range.selectNodeContents(n);
    const t = range.getBoundingClientRect();
    if (t.width < 1) continue;
    const meets = t.right > box.left && t.left < box.right && t.bottom > box.top
      && t.top < box.bottom;
    const inside = t.left >= box.left - 1 && t.right <= box.right + 1
      && t.top >= box.top - 1 && t.bottom <= box.bottom + 1;
    if (meets && !inside) {
      out.push(['cut', n.nodeValue.trim().slice(0, 60), el.className,
                Math.round(t.left - box.left), Math.round(box.right - t.right),
                Math.round(t.top - box.top), Math.round(box.bottom - t.bottom)]);
      break;
    }
  }
}
for (const g of document.querySelectorAll('.js-plotly-plot')) {
  const box = g.getBoundingClientRect();
  if (box.width < 1) continue;
  // every category of a bar chart is written out in full on its axis
  for (const tr of g.data || []) {
    if (tr.type !== 'bar') continue;
    const cats = (tr.orientation === 'h' ? tr.y : tr.x) || [];
    const axis = tr.orientation === 'h' ? '.ytick text' : '.xtick text';
    const shown = new Set([...g.querySelectorAll(axis)].map(t => t.textContent));
    for (const c of cats) if (!shown.has(String(c))) out.push(['category', String(c)]);
  }
  for (const tx of g.querySelectorAll('.xtick text, .ytick text, .gtitle, .legendtext')) {
    const r = tx.getBoundingClientRect();
    if (r.width < 1) continue;
    if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1
        || r.bottom > box.bottom + 1)
      out.push(['plot', tx.textContent, Math.round(r.left - box.left),
                Math.round(box.right - r.right)]);
  }
}
return out;
"""

# Latin words split across two lines ("City managemen / t"): each word of every visible
# text node (maps and charts aside) must lie on one line.
BROKEN_WORDS = r"""
const out = [];
const SKIP = '.leaflet-container, .js-plotly-plot, .wall-ticker .track, script, style';
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const el = n.parentElement;
  if (!el || el.closest(SKIP) || el.closest('[hidden]')) continue;
  const r = el.getBoundingClientRect();
  if (r.width < 2 || r.height < 2 || r.bottom < 0 || r.left >= innerWidth) continue;
  for (const m of n.nodeValue.matchAll(/[A-Za-z]{2,}/g)) {
    const range = document.createRange();
    range.setStart(n, m.index);
    range.setEnd(n, m.index + m[0].length);
    const tops = new Set([...range.getClientRects()].filter(q => q.width > 0)
      .map(q => Math.round(q.top)));
    if (tops.size > 1) { out.push([m[0], el.className, n.nodeValue.slice(0, 60)]); break; }
  }
}
return out;
"""

# English words a Chinese screen may show, each for a reason: units and the product name.
ALLOWED_EN = {
    "km",  # kilometres, written as in Chinese technical text
    "Wangge",  # the product's name
    "XLSX",  # file formats, named as the files are: 导出 XLSX / CSV / PDF
    "CSV",
    "PDF",
}
WORD = re.compile(r"[A-Za-z]{2,}")


def english_words(items: list[list[str]]) -> list[tuple[str, str]]:
    """The (word, element) pairs of visible text that are English words not allowed."""
    found = []
    for text, where in items:
        for word in WORD.findall(text):
            if word not in ALLOWED_EN:
                found.append((word, where))
    return found


@pytest.fixture(scope="module")
def session(chrome: Any, server_url: str) -> dict[str, str]:
    """Signed in once as the city leader; remembers the current language."""
    viewport(chrome, 1920, 1080)
    login(chrome, server_url, "leader")
    return {"lang": ""}


def _open(chrome: Any, server_url: str, state: dict[str, str], lang: str, path: str) -> None:
    if state["lang"] != lang:
        chrome.get(f"{server_url}/lang/{lang}?next={path}")
        state["lang"] = lang
    else:
        chrome.get(server_url + path)


@pytest.mark.parametrize(("lang", "page", "size"), CASES)
def test_screen(
    chrome: Any,
    server_url: str,
    session: dict[str, str],
    artifacts: Path,
    lang: str,
    page: str,
    size: str,
) -> None:
    width, height = SIZES[size]
    path, ready, map_id = PAGES[page]
    viewport(chrome, width, height)
    _open(chrome, server_url, session, lang, path)
    wait(chrome, 60).until(lambda d: d.execute_script(f"return {ready};"))
    # let the charts settle their margins and the grid size its headers
    wait(chrome, 10).until(
        lambda d: d.execute_script(
            "return document.fonts.status === 'loaded'"
            " && ![...document.querySelectorAll('._dash-loading, .dash-spinner')].length;"
        )
    )
    shot(chrome, artifacts, f"screens-{page}-{lang}-{size}")

    # the page never scrolls sideways
    doc_w = chrome.execute_script("return document.scrollingElement.scrollWidth;")
    inner_w = chrome.execute_script("return innerWidth;")
    assert doc_w <= inner_w, f"page is {doc_w}px wide in a {inner_w}px window"

    if page == "wall":
        # the clock's date: in English the month is named (08/12/2026 is August in the US)
        date = chrome.execute_script("return document.getElementById('wall-date').innerText;")
        assert not re.search(r"\d{1,2}/\d{1,2}/\d{4}", date), date
        if lang == "en":
            assert re.search(r"\b\d{1,2} [A-Z][a-z]{2} \d{4}\b", date), date
        else:
            assert re.search(r"\d{4}年\d{2}月\d{2}日", date), date

    if page == "wall" or (page == "panorama" and size in WIDE):
        # the wall and the panorama on a big screen fit the screen: nothing below the fold
        doc_h = chrome.execute_script("return document.scrollingElement.scrollHeight;")
        assert doc_h <= height, f"page is {doc_h}px tall on a {height}px screen"

    if page != "wall":
        nav_shown = chrome.execute_script(
            "const n = document.querySelector('.wg-nav');"
            " return !!n && n.getClientRects().length > 0;"
        )
        if size == "phone":
            # the menu is collapsed behind a toggle that opens it
            assert not nav_shown
            assert count(chrome, "#shell-menu-toggle") == 1
            chrome.execute_script("document.querySelector('#shell-menu-toggle').click();")
            wait(chrome, 5).until(
                lambda d: d.execute_script(
                    "return document.querySelector('.wg-nav').getClientRects().length > 0"
                    " && document.querySelector('.wg-nav a').getBoundingClientRect().width > 0;"
                )
            )
            shot(chrome, artifacts, f"screens-{page}-{lang}-{size}-menu")
            chrome.execute_script("document.querySelector('#shell-menu-toggle').click();")
        else:
            assert nav_shown

    if map_id:
        map_h = chrome.execute_script(
            "return document.getElementById(arguments[0]).getBoundingClientRect().height;", map_id
        )
        least = 0.5 * height if size == "phone" else 300
        assert map_h >= least, f"map is {map_h}px tall"

    truncated = chrome.execute_script(TRUNCATED)
    assert not truncated, f"truncated labels: {truncated}"
    broken = chrome.execute_script(BROKEN_WORDS)
    assert not broken, f"words split across lines: {broken[:12]}"

    if page == "work" and size in WIDE:
        # a work log line keeps its place (a grid's name) whole; its words wrap instead
        places = chrome.execute_script(
            "return [...document.querySelectorAll('#work-logs .tick-row > span:last-child')]"
            ".map(s => { const r = document.createRange(); r.selectNodeContents(s);"
            " return [s.innerText, new Set([...r.getClientRects()].filter(q => q.width > 0)"
            ".map(q => Math.round(q.top))).size]; });"
        )
        assert places, "the work log shows no lines"
        split = [name for name, lines in places if lines > 1]
        assert not split, f"place names split across lines: {split[:8]}"

    if (page == "incidents" or (page, lang) == ("assessment", "zh-CN")) and size in WIDE:
        # a command centre's screen shows every column of the queue and of the scorecard
        # (in English its longer headers scroll, beside the pinned rank and name)
        hidden = chrome.execute_script(
            "const v = document.querySelector('.ag-body-horizontal-scroll-viewport');"
            " return v ? v.scrollWidth - v.clientWidth : 0;"
        )
        assert hidden <= 1, f"the table hides {hidden}px of its columns"

    if lang == "zh-CN":
        if size == "1080p" and count(chrome, ".dash-dropdown"):
            # a dropdown's own texts (its search box) show once it is open
            click(chrome, ".dash-dropdown")
            wait(chrome, 10).until(lambda d: count(d, ".dash-dropdown-option"))
        words = english_words(chrome.execute_script(VISIBLE_TEXTS))
        assert not words, f"English on a Chinese screen: {words[:12]}"


# The header on a big screen with the longest freshness line it can say: every feed stale
# for every reason, hours old, and open system warnings (built by the app's own wording).
def _longest_fresh_line(lang: str) -> str:
    from dashboard.live import fresh_text

    why = ["lag", "pending", "restarts"]
    rows = [{"feed": f, "age_s": 39 * 3600, "why": why} for f in ("reports", "locations", "video")]
    return fresh_text(rows, 12, lang)


# Each menu entry's text lies on one line; the header's parts do not overlap.
HEADER = r"""
const lines = [...document.querySelectorAll('.wg-nav a')].map(a => {
  const r = document.createRange(); r.selectNodeContents(a);
  return [a.textContent, r.getClientRects().length];
});
const parts = [...document.querySelector('.wg-header').children]
  .filter(el => el.getClientRects().length).map(el => [el.className, el.getBoundingClientRect()]);
const overlaps = [];
for (let i = 0; i < parts.length; i++) for (let j = i + 1; j < parts.length; j++) {
  const [a, ra] = parts[i], [b, rb] = parts[j];
  if (ra.left < rb.right - 1 && rb.left < ra.right - 1 && ra.top < rb.bottom - 1
      && rb.top < ra.bottom - 1) overlaps.push([a, b]);
}
return {broken: lines.filter(([, n]) => n !== 1), overlaps: overlaps};
"""


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
@pytest.mark.parametrize("size", [(1280, 800), (1600, 900), (1920, 1080)])
def test_the_menu_keeps_its_words_when_every_feed_lags(
    chrome: Any,
    server_url: str,
    session: dict[str, str],
    artifacts: Path,
    lang: str,
    size: tuple[int, int],
) -> None:
    path, ready, _ = PAGES["panorama"]
    viewport(chrome, *size)
    _open(chrome, server_url, session, lang, path)
    wait(chrome, 60).until(lambda d: d.execute_script(f"return {ready};"))
    line = _longest_fresh_line(lang)
    chrome.execute_script(
        "document.getElementById('shell-fresh').textContent = arguments[0];", line
    )
    got = chrome.execute_script(HEADER)
    shot(chrome, artifacts, f"screens-header-lagging-{lang}-{size[0]}")
    assert got["broken"] == [], f"menu entries broken over lines: {got['broken']}"
    assert got["overlaps"] == [], f"header parts overlap: {got['overlaps']}"
    doc_w = chrome.execute_script("return document.scrollingElement.scrollWidth;")
    assert doc_w <= size[0], f"page is {doc_w}px wide in a {size[0]}px window"
