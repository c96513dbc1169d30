"""The one message catalog: zh-CN first, English switchable.

``t(key, lang)`` looks a message up; ``{name}`` placeholders are filled from kwargs.
The language comes from the ``wg_lang`` cookie (set by ``/lang/<code>``), else the
configured default. A unit test checks every key has both languages.
"""

from __future__ import annotations

from typing import Any

LANGS = ("zh-CN", "en")
COOKIE = "wg_lang"

CATALOG: dict[str, tuple[str, str]] = {
    # shell
    "app.title": ("网格化社会治理态势感知平台", "Grid Governance Situational Awareness"),
    "app.short": ("网格", "Wangge"),
    "nav.panorama": ("全景网格", "Panorama"),
    "nav.work": ("网格工作", "Grid work"),
    "nav.warnings": ("研判预警", "Early warning"),
    "nav.assessment": ("监督考核", "Assessment"),
    "nav.wall": ("大屏", "Wall screen"),
    "lang.switch": ("English", "中文"),
    # screens (small screens, clipping, built-in widget texts)
    "nav.menu": ("菜单", "Menu"),
    # AG Grid's own texts (localeText; key = "aggrid." + AG Grid's key)
    "aggrid.noRowsToShow": ("暂无数据", "No rows to show"),
    "aggrid.loadingOoo": ("加载中…", "Loading…"),
    "aggrid.loadingError": ("加载出错", "Loading error"),
    "aggrid.ariaSortAscending": ("升序", "Ascending"),
    "aggrid.ariaSortDescending": ("降序", "Descending"),
    "aggrid.ariaSortNone": ("未排序", "None"),
    "aggrid.ariaRowSelect": ("按空格键选中此行", "Press SPACE to select this row"),
    # date pickers and dropdowns (their built-in English)
    "picker.start": ("开始日期", "Start date"),
    "picker.end": ("结束日期", "End date"),
    "picker.date": ("选择日期", "Select date"),
    "picker.select": ("请选择…", "Select…"),
    # grid work: the replay picker marks who is online
    "work.replay.online": ("在线", "online"),
    "work.replay.offline": ("离线", "offline"),
    # dcc.Dropdown's own texts (its `labels`; key = "dropdown." + Dash's key)
    "dropdown.select_all": ("全选", "Select all"),
    "dropdown.deselect_all": ("全不选", "Deselect all"),
    "dropdown.selected_count": ("已选 {num_selected} 项", "{num_selected} selected"),
    "dropdown.search": ("搜索", "Search"),
    "dropdown.clear_search": ("清除搜索", "Clear search"),
    "dropdown.clear_selection": ("清除选择", "Clear selection"),
    "dropdown.no_options_found": ("无匹配项", "No options found"),
    "fresh.updated": ("{s} 秒前更新", "updated {s} s ago"),
    "fresh.nodata": ("暂无数据", "no data yet"),
    "fresh.stale": ("数据中断 · 最后更新 {t}", "stale since {t}"),
    "notfound.title": ("未找到该区域", "Area not found"),
    "notfound.body": ("区域编号 “{id}” 不存在。", "There is no area with id “{id}”."),
    "notfound.back": ("返回全市", "Back to the city"),
    "page.notfound": ("页面不存在", "Page not found"),
    "page.notfound.body": ("您访问的地址不存在。", "The address you opened does not exist."),
    # accounts
    "auth.logout": ("退出", "Sign out"),
    "auth.denied": ("无权访问", "Access denied"),
    "auth.denied.body": ("该区域不在您的权限范围内。", "This area is outside your scope."),
    "role.city_leader": ("市领导", "City leader"),
    "role.district_commander": ("区指挥中心", "District command"),
    "role.street_operator": ("街道操作员", "Street operator"),
    "role.supervisor": ("督查考核", "Supervisor"),
    "role.admin": ("系统管理员", "Administrator"),
    "role.wall": ("大屏", "Wall screen"),
    # levels
    "level.city": ("市", "City"),
    "level.district": ("区", "District"),
    "level.street": ("街道", "Street"),
    "level.grid": ("网格", "Grid"),
    # metrics
    "metric.open": ("在办事件", "Open incidents"),
    "metric.reports": ("今日上报", "Reports today"),
    "metric.overdue": ("超期", "Overdue"),
    "metric.warning": ("预警等级", "Warning level"),
    "metric.coverage": ("巡查覆盖率", "Patrol coverage"),
    "metric.online": ("在线网格员", "Workers online"),
    "metric.video": ("视频告警", "Video alerts"),
    "kpi.reports": ("今日上报", "Reports today"),
    "kpi.open": ("在办事件", "Open"),
    "kpi.overdue": ("超期事件", "Overdue"),
    "kpi.resolved": ("今日办结", "Resolved today"),
    "kpi.grid_share": ("小事不出网格", "Closed within grid"),
    "kpi.online": ("在线 / 在岗", "Online / on duty"),
    "kpi.coverage": ("今日巡查覆盖", "Patrol coverage today"),
    "kpi.video": ("今日视频告警", "Video alerts today"),
    "kpi.warnings": ("活动预警", "Active warnings"),
    "panel.map": ("态势地图", "Situation map"),
    "panel.trend": ("24小时趋势", "Last 24 hours"),
    "panel.categories": ("事件类别", "Incident categories"),
    "panel.hotspots": ("热点区域", "Hot spots"),
    "panel.ticker": ("实时动态", "Latest events"),
    "panel.labels": ("视频告警类型", "Video alert labels"),
    "map.metric": ("着色指标", "Colour by"),
    "map.allgrids": ("显示全部网格", "Show all grids"),
    "map.workers": ("网格员", "Workers"),
    "map.incidents": ("在办事件", "Open incidents"),
    "map.legend": ("图例", "Legend"),
    "trend.reports": ("事件上报", "Reports"),
    "trend.video": ("视频告警", "Video alerts"),
    "wall.clock": ("{date} {weekday}", "{weekday} {date}"),
    "wall.tour": ("轮播", "Tour"),
    "wall.red": ("红色预警", "RED WARNING"),
    "wall.back": ("返回大屏", "Back to the wall screen"),
    "wall.noscope.title": ("大屏区域不在当前城市", "This screen's area is not in this city"),
    "wall.noscope.body": (
        "此大屏账号的区域 “{id}” 不属于{city}。请管理员调整该账号的区域（wangge users set-role）。",
        "This screen's account is scoped to “{id}”, which is not an area of {city}. "
        "Ask an administrator to re-scope it (wangge users set-role).",
    ),
    # warning levels
    "warn.blue": ("蓝色", "Blue"),
    "warn.yellow": ("黄色", "Yellow"),
    "warn.orange": ("橙色", "Orange"),
    "warn.red": ("红色", "Red"),
    # early-warning page
    "warn.list": ("预警列表", "Warnings"),
    "warn.none": ("当前范围内没有符合条件的预警", "No warnings match in your area"),
    "warn.pick": ("选择一条预警查看详情", "Pick a warning to see its details"),
    "warn.gone": (
        "该预警不存在或不在您的权限范围内",
        "This warning does not exist or is outside your scope",
    ),
    "warn.sound": ("声音提示", "Sound"),
    "warn.alarm": (
        "新{level}预警：{rule} · {area}（共{n}条）",
        "New {level} warning: {rule} · {area} ({n} new)",
    ),
    "warn.summary": ("研判依据", "Why"),
    "warn.evidence": ("关联事件（{n}）", "Evidence ({n})"),
    "warn.timeline": ("处置记录", "Timeline"),
    "rule.threshold": ("阈值预警", "Threshold"),
    "rule.surge": ("突增预警", "Surge"),
    "rule.sla": ("超时预警", "SLA"),
    "rule.patrol_gap": ("巡查空白", "Patrol gap"),
    "rule.video_cluster": ("视频聚集告警", "Video cluster"),
    "rule.recurrence": ("反复发生", "Recurrence"),
    "rule.fusion": ("多源融合", "Fused situation"),
    "wstatus.new": ("待签收", "New"),
    "wstatus.acknowledged": ("已签收", "Acknowledged"),
    "wstatus.dispatched": ("已派遣", "Dispatched"),
    "wstatus.resolved": ("已办结", "Resolved"),
    "wstatus.dismissed": ("已排除", "Dismissed"),
    "wstatus.cleared": ("已自动解除", "Cleared"),
    "wfilter.rule": ("规则", "Rule"),
    "wfilter.area": ("区域", "Area"),
    "wfilter.time": ("时间", "Time"),
    "wfilter.hours": ("近{n}小时", "Last {n} h"),
    "warn.engine": ("系统研判", "Engine"),
    "warn.unavailable": ("数据暂不可用", "Data unavailable"),
    "wfield.category": ("类别", "Category"),
    "wfield.label": ("视频标签", "Video label"),
    "wfield.n": ("数量", "Count"),
    "wfield.min_count": ("阈值", "Threshold"),
    "wfield.window_min": ("时间窗（分钟）", "Window (min)"),
    "wfield.grids": ("涉及网格", "Grids"),
    "wfield.expected": ("同期基线", "Baseline"),
    "wfield.p": ("偶发概率", "Chance"),
    "wfield.breached": ("已超时", "Breached"),
    "wfield.due_soon": ("即将超时", "Due soon"),
    "wfield.by_stage": ("按环节", "By stage"),
    "wfield.n_gap": ("空白网格", "Grids unvisited"),
    "wfield.n_workers": ("网格员", "Workers"),
    "wfield.n_online": ("在线", "Online"),
    "wfield.all_offline": ("全部离线", "All offline"),
    "wfield.gap_hours": ("空白时长（小时）", "Gap (h)"),
    "wfield.cameras": ("摄像头", "Cameras"),
    "wfield.clusters": ("聚集点", "Places"),
    "wfield.max_n": ("最多次数", "Most reports"),
    "wfield.radius_m": ("半径（米）", "Radius (m)"),
    "wfield.days": ("天数", "Days"),
    "wfield.linked": ("关联（上报~视频）", "Linked (report~video)"),
    "wfield.rules": ("来源规则", "Rules"),
    "wfield.rule": ("规则", "Rule"),
    "wfield.area": ("区域", "Area"),
    "wfield.status": ("状态", "Status"),
    "wfield.first": ("首次发现", "First seen"),
    "wfield.last": ("最近发现", "Last seen"),
    "wfield.escalated": ("已升级至", "Escalated to"),
    "wfield.assigned": ("派遣给", "Dispatched to"),
    "wfield.reason": ("说明", "Note"),
    "wact.acknowledge": ("签收", "Acknowledge"),
    "wact.dispatch": ("派遣", "Dispatch"),
    "wact.resolve": ("办结", "Resolve"),
    "wact.dismiss": ("排除", "Dismiss"),
    "wact.assignee": ("派遣单位或人员", "Unit or person to dispatch to"),
    "wact.note": ("备注 / 排除原因", "Note / reason for dismissal"),
    "waction.open": ("发现", "opened"),
    "waction.escalate": ("升级", "escalated"),
    "waction.clear": ("自动解除", "cleared"),
    "waction.acknowledge": ("签收", "acknowledged"),
    "waction.dispatch": ("派遣", "dispatched"),
    "waction.resolve": ("办结", "resolved"),
    "waction.dismiss": ("排除", "dismissed"),
    "wresult.ok": ("已完成", "Done"),
    "wresult.denied": ("无权处理该预警", "You may not act on this warning"),
    "wresult.stale": ("该预警状态已变化，请刷新查看", "The warning has changed meanwhile"),
    "wresult.need_note": ("排除预警需要填写原因", "A dismissal needs a reason"),
    "wresult.need_assignee": ("请填写派遣单位或人员", "Say whom to dispatch to"),
    # categories
    "cat.dispute": ("矛盾纠纷", "Disputes"),
    "cat.safety_hazard": ("安全隐患", "Safety hazards"),
    "cat.public_order": ("治安", "Public order"),
    "cat.sanitation": ("环境卫生", "Sanitation"),
    "cat.city_management": ("城市管理", "City management"),
    "cat.livelihood": ("民生服务", "Livelihood"),
    "cat.fire": ("消防", "Fire"),
    "cat.other": ("其他", "Other"),
    # steps
    "step.reported": ("上报", "reported"),
    "step.accepted": ("受理", "accepted"),
    "step.dispatched": ("派遣", "dispatched"),
    "step.handling": ("处置", "handling"),
    "step.resolved": ("办结", "resolved"),
    "step.verified": ("核查", "verified"),
    "step.closed": ("结案", "closed"),
    "step.returned": ("退回", "returned"),
    "step.escalated": ("上报升级", "escalated"),
    # video labels
    "label.crowd_gathering": ("人员聚集", "Crowd gathering"),
    "label.smoke_fire": ("烟火", "Smoke / fire"),
    "label.illegal_parking": ("违章停车", "Illegal parking"),
    "label.garbage_overflow": ("垃圾满溢", "Garbage overflow"),
    "label.street_vending": ("占道经营", "Street vending"),
    "label.intrusion": ("区域入侵", "Intrusion"),
    "label.fall": ("人员倒地", "Person fallen"),
    "weekday.0": ("星期一", "Monday"),
    "weekday.1": ("星期二", "Tuesday"),
    "weekday.2": ("星期三", "Wednesday"),
    "weekday.3": ("星期四", "Thursday"),
    "weekday.4": ("星期五", "Friday"),
    "weekday.5": ("星期六", "Saturday"),
    "weekday.6": ("星期日", "Sunday"),
    # supervision and assessment (监督考核)
    "asm.kind.month": ("月度", "Month"),
    "asm.kind.week": ("周", "Week"),
    "asm.kind.day": ("日", "Day"),
    "asm.kind.range": ("自定义", "Custom"),
    "asm.level": ("考核层级", "Level"),
    "asm.period": ("统计期", "Period"),
    "asm.level.district": ("区", "Districts"),
    "asm.level.street": ("街道", "Streets"),
    "asm.level.grid": ("网格", "Grids"),
    "asm.level.worker": ("网格员", "Workers"),
    "asm.final": ("已定稿", "Final"),
    "asm.live": ("统计中", "In progress"),
    "asm.rows": ("共 {n} 个", "{n} rows"),
    "asm.generated": ("生成于 {t}", "generated {t}"),
    "asm.export": ("导出", "Export"),
    "asm.stage.table": ("正在整理表格…", "Preparing the table…"),
    "asm.stage.rows": ("正在写入第 {done}/{total} 行", "Writing rows {done}/{total}"),
    "asm.stage.pages": ("正在排版第 {done} 页", "Laying out page {done}"),
    "asm.stage.pack": ("正在生成文件…", "Packing the file…"),
    "asm.stage.hash": ("正在计算文件校验值…", "Hashing the file…"),
    "asm.stage.audit": ("正在写入审计日志…", "Writing the audit log…"),
    "asm.stage.done": ("已完成", "Done"),
    "asm.failed": ("导出失败，请重试", "The export failed; please try again"),
    "asm.lost": ("导出任务已失效，请重新导出", "The export is gone; please export again"),
    "asm.exported": ("已导出 {name}（{n} 行）", "Exported {name} ({n} rows)"),
    "asm.export_denied": ("您的角色无权导出考核表", "Your role may not export scorecards"),
    "asm.rate_limited": ("导出过于频繁，请稍后再试", "Too many exports; try again shortly"),
    "asm.stale": ("表格已过期，请刷新页面后再导出", "The table expired; reload the page first"),
    "asm.hint": (
        "点击名称逐级下钻，点击任一指标数值查看其背后的事件；表头悬停查看指标定义。",
        "Click a name to drill down, any number to see the incidents behind it; hover a "
        "heading for its definition.",
    ),
    "asm.behind": ("「{name}」{metric}：背后的事件（{n}）", "{name} · {metric}: incidents ({n})"),
    "asm.behind.none": ("该指标没有对应的事件", "No incidents behind this number"),
    "asm.behind.not_incidents": (
        "该指标来自巡查轨迹、定位或预警记录，不对应具体事件",
        "This metric comes from patrols, positions or warnings, not incidents",
    ),
    "asm.behind.counts": ("计入分子", "Counts"),
    "asm.src.worker": ("网格员巡查", "Grid worker"),
    "asm.src.hotline": ("12345热线", "Hotline"),
    "asm.src.camera": ("视频发现", "Camera"),
    "asm.src.resident": ("群众反映", "Resident"),
    "asm.col.incident": ("事件编号", "Incident"),
    "asm.col.category": ("类别", "Category"),
    "asm.col.source": ("来源", "Source"),
    "asm.col.grid": ("网格", "Grid"),
    "asm.col.reported": ("上报时间", "Reported"),
    "asm.col.closed": ("结案时间", "Closed"),
    "asm.col.level": ("解决层级", "Closed at"),
    "asm.col.hours": ("办理时长(小时)", "Hours"),
    "asm.none": ("该范围内没有可考核的对象", "Nothing to assess in this area"),
    "asm.unavailable": ("考核数据暂不可用", "Scorecard data unavailable"),
    # grid work (网格工作)
    "rule.left_grid": ("离开责任网格", "Left own grid"),
    "rule.idle": ("长时间静止", "Idle too long"),
    "wfield.minutes": ("持续（分钟）", "For (min)"),
    "work.kpi.on_duty": ("在岗", "On duty"),
    "work.kpi.online": ("在线", "Online"),
    "work.kpi.offline": ("离线", "Offline"),
    "work.kpi.in_own": ("在责任网格", "In own grid"),
    "work.kpi.coverage": ("今日巡查覆盖率", "Patrol coverage today"),
    "work.kpi.unpatrolled": ("今日未巡查网格", "Grids not patrolled today"),
    "work.panel.gaps": ("今日未巡查网格", "Not patrolled today"),
    "work.panel.children": ("分区巡查情况", "By area"),
    "work.panel.activity": ("网格员工作情况（今日）", "Worker activity (today)"),
    "work.panel.logs": ("工作纪实", "Work log"),
    "work.panel.replay": ("轨迹回放", "Track replay"),
    "work.gaps.none": ("今日所有网格均已巡查", "Every grid has been patrolled today"),
    "work.gaps.more": ("另有 {n} 个未列出", "{n} more not listed"),
    "work.col.area": ("区域", "Area"),
    "work.col.on_duty": ("在岗（名册）", "On duty (roster)"),
    "work.col.online": ("其中在线", "Of whom online"),
    "work.col.coverage": ("覆盖率", "Coverage"),
    "work.col.worker": ("网格员", "Worker"),
    "work.col.type": ("类型", "Type"),
    "work.col.grid": ("责任网格", "Own grid"),
    "work.col.phone": ("电话", "Phone"),
    "work.col.reports": ("上报", "Reports"),
    "work.col.handled": ("处置", "Handled"),
    "work.col.distance": ("巡查里程", "Distance"),
    "work.col.own_time": ("在格时长", "Time in own grid"),
    "work.col.last_seen": ("最后在线", "Last seen"),
    "work.col.time": ("时间", "Time"),
    "work.col.what": ("事项", "What"),
    "work.activity.street": (
        "进入街道或网格后查看每名网格员的工作情况。",
        "Open a street or a grid to see each worker's activity.",
    ),
    "work.private": (
        "网格员姓名与轨迹属于个人信息，仅区、街道指挥人员可见；您可查看数量与覆盖率。",
        "Worker names and tracks are personal information, visible to district and street "
        "command only; you see counts and coverage.",
    ),
    "work.logs.none": ("今日暂无工作纪实", "No work logged today"),
    "work.logs.anon": ("网格员", "A worker"),
    "type.full_time": ("专职网格员", "Full-time"),
    "type.part_time": ("兼职网格员", "Part-time"),
    "type.political_legal": ("政法网格员", "Political-legal"),
    "type.emergency": ("应急格", "Emergency"),
    "type.safety_supervision": ("安监格", "Safety supervision"),
    "work.legend.online": ("在线", "Online"),
    "work.legend.offline": ("离线", "Offline"),
    "work.legend.cluster": (
        "此刻位于该区的网格员：在线 / 有定位",
        "Workers located here now: online / with a position",
    ),
    "work.replay.worker": ("网格员", "Worker"),
    "work.replay.pick": ("选择网格员", "Pick a worker"),
    "work.replay.grid": ("按网格筛选", "Filter by grid"),
    "work.replay.window": ("时间范围", "Window"),
    "work.replay.hours": ("近 {h} 小时", "Last {h} h"),
    "work.replay.play": ("播放", "Play"),
    "work.replay.pause": ("暂停", "Pause"),
    "work.replay.speed": ("速度", "Speed"),
    "work.replay.export": ("导出轨迹 CSV", "Export track CSV"),
    "work.replay.empty": ("该时间范围内没有轨迹点", "No track points in this window"),
    "work.replay.summary": (
        "{n} 个轨迹点 · {km} 公里 · 上报 {r} 件",
        "{n} points · {km} km · {r} reports",
    ),
    "work.replay.hint": (
        "选择网格员回放其巡查轨迹；只选网格则一同回放经过该网格的全部网格员。",
        "Pick a worker to replay the patrol; pick only a grid to replay every worker who "
        "passed through it.",
    ),
    "work.replay.day": ("指定日期时段…", "A chosen day and hours…"),
    "work.replay.summary.grid": (
        "{w} 名网格员 · {n} 个轨迹点 · {km} 公里 · 上报 {r} 件",
        "{w} workers · {n} points · {km} km · {r} reports",
    ),
    "work.replay.capped": (
        "仅回放在该网格停留最久的 {cap} 名（共 {total} 名经过）",
        "Showing the {cap} workers longest in the grid (of {total} who passed through)",
    ),
    "work.replay.empty.grid": (
        "该时间范围内没有网格员经过该网格",
        "No worker passed through this grid in this window",
    ),
    "work.replay.err.date": ("请选择日期", "Pick a date"),
    "work.replay.err.hours": ("请选择开始与结束时间", "Pick the start and end hours"),
    "work.replay.err.order": ("结束时间须晚于开始时间", "The end must be after the start"),
    "work.replay.err.long": ("时间范围最长 {h} 小时", "A window is at most {h} hours long"),
    "work.replay.err.future": ("不能回放未来的时间", "That window has not happened yet"),
    "work.replay.err.retention": (
        "轨迹只保留 {days} 天，请选择更近的日期",
        "Tracks are kept for {days} days; pick a more recent day",
    ),
    "work.export.limited": ("导出过于频繁，请稍后再试。", "Too many exports; try again shortly."),
    # feed freshness and pipeline health (system warnings)
    "feed.reports": ("上报", "Reports"),
    "feed.locations": ("定位", "Positions"),
    "feed.video": ("视频", "Video"),
    "fresh.ago_s": ("{s} 秒前", "{s} s ago"),
    "fresh.ago_m": ("{m} 分钟前", "{m} min ago"),
    "fresh.ago_h": ("{h} 小时前", "{h} h ago"),
    "fresh.feed": ("{feed} {ago}更新", "{feed} updated {ago}"),
    "fresh.feed_none": ("{feed} 暂无数据", "{feed} no data yet"),
    "fresh.feed_stale": (
        "⚠ {feed} 数据滞后（{why}）· 最新 {ago}",
        "⚠ {feed} STALE ({why}) · newest {ago}",
    ),
    "fresh.system": ("⚠ 系统预警 {n} 条", "⚠ {n} system warning(s)"),
    "stale.lag": ("积压未处理", "backlog"),
    "stale.pending": ("批次卡住", "batch stuck"),
    "stale.restarts": ("反复重启", "crash loop"),
    "rule.system": ("系统故障：数据管道停滞", "System: pipeline stalled"),
    "wfield.feed": ("数据源", "Feed"),
    "wfield.reasons": ("原因", "Why"),
    "wfield.lag": ("积压条数", "Backlog (entries)"),
    "wfield.pending_age_s": ("最早未确认（秒）", "Oldest pending (s)"),
    "wfield.restarts_1h": ("近 1 小时重启次数", "Restarts in the last hour"),
    "work.mock_gps": ("模拟定位", "mock GPS"),
}


def normalize(lang: str | None, default: str = "zh-CN") -> str:
    if not lang:
        return default if default in LANGS else "zh-CN"
    lang = lang.strip()
    if lang.lower().startswith("en"):
        return "en"
    if lang.lower().startswith("zh"):
        return "zh-CN"
    return default if default in LANGS else "zh-CN"


def t(key: str, lang: str = "zh-CN", **kw: Any) -> str:
    pair = CATALOG.get(key)
    if pair is None:
        return key
    text = pair[1] if lang == "en" else pair[0]
    return text.format(**kw) if kw else text


def current_lang(default: str) -> str:
    """This request's language: ?lang=, else the cookie, else the configured default."""
    from flask import request

    try:
        return normalize(request.args.get("lang") or request.cookies.get(COOKIE), default)
    except RuntimeError:  # outside a request
        return normalize(None, default)


def prefixed(prefix: str, lang: str) -> dict[str, str]:
    """Every message whose key starts with ``prefix``, keyed by the rest of the key (the
    texts a widget takes as a map, e.g. AG Grid's ``localeText``)."""
    i = 0 if normalize(lang) == "zh-CN" else 1
    return {k[len(prefix) :]: v[i] for k, v in CATALOG.items() if k.startswith(prefix)}


def other(lang: str) -> str:
    return "en" if lang != "en" else "zh-CN"
