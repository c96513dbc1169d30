"""The one settings loader: defaults < config.toml < environment; everything documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.settings import (
    DEFAULT_CONFIG,
    SettingsError,
    env_name,
    load_settings,
    setting_names,
)


def _documented() -> dict[tuple[str, str], bool]:
    """(section, key) → has a comment line right above it in config.toml."""
    out: dict[tuple[str, str], bool] = {}
    section = ""
    prev = ""
    for line in DEFAULT_CONFIG.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"^(\w+)\s*=", line):
            out[(section, m.group(1))] = prev.startswith("#")
        prev = line.strip()
    return out


def test_every_setting_is_in_config_toml_with_a_comment() -> None:
    documented = _documented()
    missing = [f"{s}.{k}" for s, k in setting_names() if (s, k) not in documented]
    assert not missing, f"settings missing from config.toml: {missing}"
    uncommented = [f"{s}.{k}" for (s, k), ok in documented.items() if not ok]
    assert not uncommented, f"settings without a comment: {uncommented}"


def test_config_toml_has_no_unknown_settings() -> None:
    known = set(setting_names())
    extra = [f"{s}.{k}" for s, k in _documented() if (s, k) not in known]
    assert not extra


def test_defaults_equal_config_toml() -> None:
    assert load_settings(environ={}) == load_settings(DEFAULT_CONFIG, environ={})


def test_environment_beats_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[streams]\nbatch_size = 10\n[redis]\nprefix = "file"\n')
    env = {
        env_name("streams", "batch_size"): "77",
        "REDIS_URL": "redis://example:6379/3",
        "DATABASE_URL": "postgresql://u@h/db",
        "WANGGE_LIVE_TIMEZONE": "UTC",
        "WANGGE_RUN_SIMULATE": "no",
    }
    s = load_settings(cfg, environ=env)
    assert s.streams.batch_size == 77
    assert s.redis.prefix == "file"
    assert s.redis.url == "redis://example:6379/3"
    assert s.database_url == "postgresql://u@h/db"
    assert s.live.timezone == "UTC"
    assert s.run.simulate is False


@pytest.mark.parametrize(
    "content, message",
    [
        ("[nope]\nx = 1\n", "unknown section"),
        ("[streams]\nbatchsize = 1\n", "unknown setting streams.batchsize"),
        ("[streams]\nbatch_size = 'many'\n", "streams.batch_size: expected int"),
        ("[run]\nsimulate = 'maybe'\n", "expected a boolean"),
        # deadlines live in the standard flow file now: say where they went
        (
            "[deadlines]\nfire = 2.0\n",
            r"\[deadlines\] closure deadlines moved to .*\[dispatch\] flows",
        ),
        ("[assessment]\naccept_hours = 1.0\n", r"assessment.accept_hours moved to .*flow"),
        ("[assessment]\ndispatch_hours = 2.0\n", r"assessment.dispatch_hours moved to .*flow"),
        ("[warnings]\nsla_stage_hours = 'reported:2'\n", r"sla_stage_hours moved to .*flow"),
        ("[warnings]\nsla_severity_scale = '1:1'\n", r"sla_severity_scale moved to .*flow"),
        ("[warnings]\nsla_category_scale = 'fire:1'\n", r"sla_category_scale moved to .*flow"),
        # the wall's tour has its own table now
        ("[dashboard]\nwall_tour_s = 10\n", r"dashboard.wall_tour_s moved to \[wall\]"),
        # a pipeline's blocked read would time out and count its connection dead
        (
            "[redis]\nsocket_timeout_s = 0.5\n[streams]\nblock_ms = 500\n",
            r"redis.socket_timeout_s \(0.5 s\) must exceed streams.block_ms \(500 ms\)",
        ),
    ],
)
def test_bad_config_gets_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    with pytest.raises(SettingsError, match=message):
        load_settings(cfg, environ={})


def test_sqlite_default_lives_under_var() -> None:
    s = load_settings(environ={})
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("var/wangge.db")


def test_no_other_module_reads_the_environment() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*root.glob("pipelines/*.py"), *root.glob("dashboard/**/*.py")]:
        if path.name == "settings.py":
            continue
        if re.search(r"os\.environ|os\.getenv", path.read_text(encoding="utf-8")):
            offenders.append(path.name)
    assert not offenders


@pytest.mark.parametrize(
    "name",
    ["WANGGE_DEADLINES_FIRE", "WANGGE_ASSESSMENT_ACCEPT_HOURS", "WANGGE_WARNINGS_SLA_STAGE_HOURS"],
)
def test_a_moved_setting_in_the_environment_says_where_it_went(name: str) -> None:
    with pytest.raises(SettingsError, match=f"environment {name}: .*moved to .*flow"):
        load_settings(environ={name: "1"})
