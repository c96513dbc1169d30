/* Chinese words inside Dash's date pickers (weekday and month names).

Dash 4's date picker formats with date-fns and takes its locale from
window.dateFns.locale (matched against the browser's languages, else the first one
registered). The page's language is the shell's `lang` attribute, so the locale is
registered only while the page is Chinese; in English nothing is registered and date-fns
keeps its own English. This is a small locale of our own (the names a calendar shows),
not a copy of date-fns's: numeric display formats (YYYY-MM-DD) need nothing more. */
(function () {
  var WEEK = {
    narrow: ["日", "一", "二", "三", "四", "五", "六"],
    short: ["日", "一", "二", "三", "四", "五", "六"],
    abbreviated: ["周日", "周一", "周二", "周三", "周四", "周五", "周六"],
    wide: ["星期日", "星期一", "星期二", "星期三", "星期四", "星期五", "星期六"]
  };
  var MONTH = ["1月", "2月", "3月", "4月", "5月", "6月", "7月", "8月", "9月", "10月", "11月", "12月"];
  var MONTH_WIDE = ["一月", "二月", "三月", "四月", "五月", "六月", "七月", "八月", "九月", "十月",
    "十一月", "十二月"];
  function long(patterns) {
    return function (opts) { return patterns[(opts && opts.width) || "full"] || patterns.full; };
  }
  var zhCN = {
    code: "zh-CN",
    localize: {
      ordinalNumber: function (n) { return "第 " + n; },
      era: function (i) { return i ? "公元" : "公元前"; },
      quarter: function (q) { return "第" + ["一", "二", "三", "四"][q - 1] + "季度"; },
      month: function (i, o) { return o && o.width === "wide" ? MONTH_WIDE[i] : MONTH[i]; },
      day: function (i, o) { return (WEEK[(o && o.width) || "wide"] || WEEK.wide)[i]; },
      dayPeriod: function (p) { return p === "pm" ? "下午" : "上午"; }
    },
    formatLong: {
      date: long({ full: "y年M月d日 EEEE", long: "y年M月d日", medium: "yyyy-MM-dd", short: "yy-MM-dd" }),
      time: long({ full: "HH:mm:ss", long: "HH:mm:ss", medium: "HH:mm:ss", short: "HH:mm" }),
      dateTime: long({ full: "{{date}} {{time}}", long: "{{date}} {{time}}",
        medium: "{{date}} {{time}}", short: "{{date}} {{time}}" })
    },
    formatRelative: function () { return "P"; },
    formatDistance: function (token, count) { return String(count); },
    match: {},
    options: { weekStartsOn: 1, firstWeekContainsDate: 4 }
  };
  function pageLang() {
    var shell = document.getElementById("wg-shell");
    return (shell && shell.getAttribute("lang")) || document.documentElement.lang || "zh-CN";
  }
  window.dateFns = window.dateFns || {};
  Object.defineProperty(window.dateFns, "locale", {
    configurable: true,
    get: function () { return pageLang().indexOf("zh") === 0 ? { zhCN: zhCN } : {}; }
  });
})();
