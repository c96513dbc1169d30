/* Wall-screen clock: updated in the browser every second (no server round trip). */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  wangge_wall: {
    height: function () { return window.innerHeight; },
    clock: function (_n, lang, tz) {
      var now = new Date();
      tz = tz || "Asia/Shanghai";
      var time = now.toLocaleTimeString("zh-CN", {timeZone: tz, hour12: false});
      // English names the month ("Tuesday 8 Dec 2026"): 08/12/2026 reads as August in the US
      var date = lang === "en"
        ? now.toLocaleDateString("en-GB",
          {timeZone: tz, year: "numeric", month: "short", day: "numeric", weekday: "long"})
        : now.toLocaleDateString("zh-CN",
          {timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", weekday: "long"});
      return [time, date];
    }
  }
});
