/* Wall-screen clock: updated in the browser every second, on the server's time. The
 * offset of this PC's clock from the server's (/clock.json, the clock the data's "today"
 * is read by) is measured at start and every few minutes, halfway through the round
 * trip: a wall PC on a closed network often has no time server and drifts. Until the
 * first answer (or while the server is away) the last offset holds. */
(function () {
  var RESYNC_MS = 5 * 60 * 1000;
  var RETRY_MS = 30 * 1000;
  var offset = 0;  // server time minus this PC's time
  var nextAt = 0;  // when to ask next
  var asking = false;

  function sync() {
    if (asking || typeof fetch === "undefined") { return; }
    asking = true;
    var sent = Date.now();
    nextAt = sent + RETRY_MS;  // unless it answers
    fetch("/clock.json", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        var back = Date.now();
        if (body && typeof body.ms === "number") {
          offset = body.ms - (sent + back) / 2;
          nextAt = back + RESYNC_MS;
          show();  // now, not at the next second: the first second showed this PC's time
        }
      })
      .catch(function () { /* the server is away: keep the last offset */ })
      .then(function () { asking = false; });
  }

  var shown = {lang: null, tz: null};  // what the clock was last drawn in

  function words(lang, tz) {
    var now = new Date(Date.now() + offset);
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

  function show() {
    if (!document.getElementById("wall-clock")) { return; }  // not on the wall now
    var w = words(shown.lang, shown.tz);
    try {
      window.dash_clientside.set_props("wall-clock", {children: w[0]});
      window.dash_clientside.set_props("wall-date", {children: w[1]});
    } catch (e) { /* the next second draws it */ }
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    wangge_wall: {
      height: function () { return window.innerHeight; },
      clock: function (_n, lang, tz) {
        shown = {lang: lang, tz: tz};
        if (Date.now() >= nextAt) { sync(); }
        return words(lang, tz);
      }
    }
  });
})();
