"""The pages: one package per page, each with the same kinds of file.

* ``layout.py`` — ``dash.register_page`` and the page's layout (Dash loads it);
* ``callbacks.py`` — thin callbacks: unpack inputs, call pure functions, return;
* ``components.py`` — builders of what the callbacks render (where a page has any);
* ``queries.py`` — pure reads and shaping, unit-tested without Flask;
* anything only that page needs (``export.py``, ``export_jobs.py``).

Dash executes each page module afresh for every app it builds, and the callbacks that
``dash.callback`` registers are taken by the next app built. :func:`load_callbacks` makes a
page's ``callbacks.py`` follow its layout the same way, so every app gets every callback.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_callbacks(layout_module: str) -> ModuleType:
    """Execute the ``callbacks.py`` beside ``layout_module`` (``pages.<page>.layout``)."""
    package = layout_module.rpartition(".")[0]  # pages.<page>
    path = Path(__file__).parent / package.rpartition(".")[2] / "callbacks.py"
    name = f"{package}.callbacks"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
