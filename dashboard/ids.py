"""Component ids, from one place, prefixed by page."""

from __future__ import annotations

# shell
URL = "url"
LANG = "shell-lang"
FRESH = "shell-fresh"
PUSH = "shell-push"  # live push: where the streams are (assets/wangge_push.js)


# the time machine's "view at" control, one per page (``components/timemachine``)
def tm(page: str, part: str) -> str:
    """``<page>-tm-<part>``: at / text (stores), tick, input, go, play, speed, mark, live,
    bar."""
    return f"{page}-tm-{part}"


# panorama
P_AREA = "pan-area"
P_TICK = "pan-tick"
P_METRIC = "pan-metric"
P_ALLGRIDS = "pan-allgrids"
P_MAP = "pan-map"
P_GEO = "pan-geo"
P_MARKERS = "pan-markers"
P_LEGEND = "pan-legend"
P_KPIS = "pan-kpis"
P_TREND = "pan-trend"
P_CATS = "pan-cats"
P_HOT = "pan-hot"
P_TICKER = "pan-ticker"
P_STALE = "pan-stale"
P_LAST = "pan-last"

# wall screen
W_AREA = "wall-area"
W_TICK = "wall-tick"
W_CLOCK_TICK = "wall-clock-tick"
W_CLOCK = "wall-clock"
W_DATE = "wall-date"
W_TITLE = "wall-title"
W_MAP = "wall-map"
W_GEO = "wall-geo"
W_KPIS = "wall-kpis"
W_TREND = "wall-trend"
W_CATS = "wall-cats"
W_LABELS = "wall-labels"
W_HOT = "wall-hot"
W_TICKER = "wall-ticker"
W_STALE = "wall-stale"
W_LAST = "wall-last"
W_BANNER = "wall-banner"
W_TOUR = "wall-tour"
W_TOUR_TICK = "wall-tour-tick"
W_LEGEND = "wall-legend"
W_TZ = "wall-tz"
W_VH = "wall-vh"
W_STOP = "wall-stop"  # the tour's position: {"i", "key", "take", "view", "area"}
W_VIEW = "wall-view"  # the carousel's view other than the panorama (warnings, work, …)
W_TAKE = "wall-take"  # the red-warning takeover: the card beside the focused map
W_TAKE_SIDE = "wall-take-side"
W_ACK = "wall-ack"  # acknowledge on the wall (a signed-in person who may act; never a kiosk)
W_ACK_MSG = "wall-ack-msg"
W_KPI_TITLE = "wall-kpi-title"  # the KPI panel's title: the area the tour shows

# early warning
WARN_TICK = "warn-tick"
WARN_LEVELS = "warn-levels"
WARN_STATUS = "warn-status"
WARN_RULES = "warn-rules"
WARN_AREA = "warn-area"
WARN_HOURS = "warn-hours"
WARN_SOUND = "warn-sound"
WARN_LIST = "warn-list"
WARN_ROW = "warn-row"  # pattern-matching: {"type": WARN_ROW, "id": warning_id}
WARN_COUNTS = "warn-counts"
WARN_BANNER = "warn-banner"
WARN_MAP = "warn-map"
WARN_GEO = "warn-geo"
WARN_MARKERS = "warn-markers"
WARN_SEL = "warn-sel"
WARN_SEEN = "warn-seen"
WARN_ALARM = "warn-alarm"
WARN_CUE = "warn-cue"
WARN_DONE = "warn-done"
WARN_DETAIL = "warn-detail"
WARN_ACTIONS = "warn-actions"
WARN_ASSIGNEE = "warn-assignee"
WARN_NOTE = "warn-note"
WARN_ACK = "warn-ack"
WARN_DISPATCH = "warn-dispatch"
WARN_RESOLVE = "warn-resolve"
WARN_DISMISS = "warn-dismiss"
WARN_MSG = "warn-msg"

# supervision and assessment (监督考核)
ASM_VIEW = "asm-view"  # the view the URL asked for (re-clamped to the session's scope)
ASM_TOKEN = "asm-token"  # the shown table's key: exports write exactly these rows
ASM_KIND = "asm-kind"
ASM_LEVEL = "asm-level"
ASM_PERIOD = "asm-period"
ASM_RANGE = "asm-range"
ASM_CRUMBS = "asm-crumbs"
ASM_TITLE = "asm-title"
ASM_TABLE = "asm-table"
ASM_BEHIND = "asm-behind"
ASM_BEHIND_TABLE = "asm-behind-table"  # its incident ids open the incident workbench
ASM_XLSX = "asm-xlsx"
ASM_CSV = "asm-csv"
ASM_PDF = "asm-pdf"
ASM_DOWNLOAD = "asm-download"
ASM_MSG = "asm-msg"
ASM_PROGRESS = "asm-progress"  # the export's progress bar, percent and stage
ASM_JOB = "asm-job"  # the export job being watched (its id)
ASM_READY = "asm-ready"  # a finished export job: its file is downloaded
ASM_POLL = "asm-poll"  # ticks while an export job runs
# grid work (网格工作); replay ids use their own prefix (a stricter callback policy)
WK_AREA = "work-area"
WK_TICK = "work-tick"
WK_MAP = "work-map"
WK_GEO = "work-geo"
WK_MARKERS = "work-markers"
WK_LEGEND = "work-legend"
WK_KPIS = "work-kpis"
WK_GAPS = "work-gaps"
WK_CHILDREN = "work-children"
WK_ACTIVITY = "work-activity"
WK_LOGS = "work-logs"
WK_STALE = "work-stale"
WK_LAST = "work-last"
WK_SENT = "work-sent"  # digests of the parts this viewer already has
TR_WORKER = "wtrk-worker"
TR_GRID = "wtrk-grid"
TR_WINDOW = "wtrk-window"
TR_DATA = "wtrk-data"
TR_PATHS = "wtrk-paths"  # one line per replayed worker
TR_OUTLINE = "wtrk-outline"  # the replayed grid, highlighted
TR_DOTS = "wtrk-dots"  # pattern-matching type: {"type": TR_DOTS, "i": slot}, one per worker
TR_TIPS = "wtrk-tips"  # their tooltips (the worker's name, as text)
TR_CUSTOM = "wtrk-custom"  # the chosen-day controls
TR_DAY = "wtrk-day"
TR_FROM = "wtrk-from"
TR_TO = "wtrk-to"
TR_REPORTS = "wtrk-reports"
TR_SLIDER = "wtrk-slider"
TR_PLAY = "wtrk-play"
TR_TIMER = "wtrk-timer"
TR_SPEED = "wtrk-speed"
TR_CLOCK = "wtrk-clock"
TR_SUMMARY = "wtrk-summary"
TR_EXPORT = "wtrk-export"
TR_LABELS = "wtrk-labels"

# audit log (admin)
AUD_ACTOR = "aud-actor"
AUD_ACTION = "aud-action"
AUD_RANGE = "aud-range"
AUD_TABLE = "aud-table"
AUD_COUNT = "aud-count"

# incident workbench (事件工作台); the action ids use their own prefix (a stricter policy)
INC_TICK = "inc-tick"
INC_VIEW = "inc-view"  # the filters the URL asked for (area, due, status)
INC_STATUS = "inc-status"
INC_CATS = "inc-cats"
INC_SEV = "inc-sev"
INC_SOURCES = "inc-sources"
INC_UNIT = "inc-unit"
INC_AREA = "inc-area"
INC_DUE = "inc-due"
INC_SOON = "inc-soon"
INC_RANGE = "inc-range"
INC_SORT = "inc-sort"
INC_DESC = "inc-desc"
INC_SIZE = "inc-size"
INC_PAGE = "inc-page"  # the page shown (0-based)
INC_NPAGES = "inc-npages"  # how many pages the last read found
INC_SHOWN = "inc-shown"  # the incident shown: its id and n_events (what an action expects)
INC_PREV = "inc-prev"
INC_NEXT = "inc-next"
INC_INFO = "inc-info"
INC_GRID = "inc-grid"
INC_SEL = "inc-sel"  # the incident whose detail is open
INC_DONE = "inc-done"  # bumped by an action: the queue and detail re-read at once
INC_DETAIL = "inc-detail"  # the facts (above the actions)
INC_MORE = "inc-more"  # the timeline, photos, linked alerts and warnings (below them)
INC_MAP = "inc-map"
INC_MARKER = "inc-marker"
INC_MAPBOX = "inc-mapbox"
INCA_BOX = "inca-box"  # the action buttons and form
INCA_BTNS = "inca-btns"
INCA_BTN = "inca-btn"  # pattern-matching: {"type": INCA_BTN, "action": action}
INCA_FORM = "inca-form"  # the open form: action, incident, request id, events seen
INCA_PENDING = "inca-pending"  # a submitted action the pipeline has not decided yet
INCA_FIELDS = "inca-fields"
INCA_UNIT = "inca-unit"
INCA_HANDLER = "inca-handler"
INCA_REASON = "inca-reason"
INCA_NOTE = "inca-note"
INCA_PHOTO = "inca-photo"
INCA_ONSITE = "inca-onsite"
INCA_LEVEL = "inca-level"
INCA_DUP = "inca-dup"
INCA_DUE = "inca-due"  # a deadline override, in hours from now
INCA_SUBMIT = "inca-submit"
INCA_CANCEL = "inca-cancel"
INCA_MSG = "inca-msg"
INCA_BULK_UNIT = "inca-bulk-unit"
INCA_BULK_HANDLER = "inca-bulk-handler"
INCA_BULK_GO = "inca-bulk-go"
INCA_BULK_MSG = "inca-bulk-msg"
INCA_BULK_FORM = "inca-bulk-form"  # the bulk dispatch's request ids, made when rows are picked
