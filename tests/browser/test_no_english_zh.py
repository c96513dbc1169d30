"""In Chinese mode the main pages show no English words (a word of Latin letters that is
not a unit, an abbreviation everyone reads, or data such as an id)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import count, login, viewport, wait

pytestmark = pytest.mark.browser

# what may stay Latin in Chinese text: units, standard abbreviations, the map's credit
ALLOWED = {"km", "h", "p90", "P90", "Leaflet", "OpenStreetMap", "CARTO", "OSM", "IP", "SHA", "GPS"}
ALLOWED |= {"English"}  # the language switch names the other language in that language
ALLOWED |= {"XLSX", "CSV", "PDF"}  # file formats on the export buttons
WORD = re.compile(r"[A-Za-z]{2,}")
PAGES = ("/", "/work", "/warnings", "/incidents", "/assessment")


def visible_words(driver: Any) -> set[str]:
    text = driver.execute_script(
        "return [...document.querySelectorAll('body *')]"
        ".filter(e => e.offsetParent !== null && e.children.length === 0)"
        ".filter(e => !e.closest('.wg-user'))"  # the account's own name is data
        ".map(e => (e.innerText || '') + ' ' + (e.getAttribute('placeholder') || ''))"
        ".join('\\n');"
    )
    return set(WORD.findall(str(text)))


SUSPENDED = (
    "return [...document.querySelectorAll('div')]"
    ".some(e => e.children.length === 0 && e.textContent === 'Loading...');"
)


@pytest.mark.parametrize("path", PAGES)
def test_no_english_in_chinese_mode(chrome: Any, server_url: str, path: str) -> None:
    viewport(chrome, 1920, 1080)
    if not chrome.get_cookies():
        login(chrome, server_url, "leader")
    chrome.get(server_url + path)
    wait(chrome).until(lambda d: count(d, ".wg-header"))
    wait(chrome, 30).until(lambda d: count(d, ".wg-main *") > 20)
    wait(chrome, 30).until(lambda d: count(d, "[data-dash-is-loading='true']") == 0)
    # dash-leaflet's lazily loaded parts (its GeoJSON) show React's fallback, an English
    # "Loading...", until their script arrives: the settled page is what is checked here
    wait(chrome, 30).until(lambda d: not d.execute_script(SUSPENDED))
    words = visible_words(chrome) - ALLOWED
    assert not words, sorted(words)
