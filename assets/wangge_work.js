/* Grid work (网格工作): cluster / worker markers and the track replay, in the browser.
   Replay: the slider is seconds since the track's first point; the marker is placed by
   interpolating between the two surrounding points, so playback is smooth at any speed. */
window.wangge = Object.assign({}, window.wangge);
window.wangge.work = {
  point: function (feature, latlng) {
    var p = feature.properties || {};
    if (p.k === "c") {
      var total = (p.on || 0) + (p.off || 0);
      var size = Math.round(Math.min(54, 22 + Math.sqrt(total) * 2.2));
      var share = total ? (p.on || 0) / total : 0;
      var cls = share >= 0.8 ? "hi" : (share >= 0.5 ? "mid" : "lo");
      var el = document.createElement("div");
      el.className = "wk-cluster " + cls;
      el.style.width = el.style.height = el.style.lineHeight = size + "px";
      el.textContent = String(p.on || 0) + "/" + String(total);
      return L.marker(latlng, {
        icon: L.divIcon({html: el, className: "wk-cluster-wrap", iconSize: [size, size]}),
        keyboard: false
      });
    }
    return L.circleMarker(latlng, {
      radius: p.r || 5, color: "#0b1a2b", fillColor: p.c || "#41c7ff", fillOpacity: 0.95, weight: 1
    });
  },
  report: function (feature, latlng) {
    return L.circleMarker(latlng, {
      radius: 6, color: "#ffffff", weight: 1, fillColor: "#f2994a", fillOpacity: 0.95
    });
  },
  /* [lat, lon] as sent → the map's coordinates (GCJ-02 for Chinese tiles; display only) */
  shown: function (ll, gcj) {
    if (!gcj || !window.wangge.map || !window.wangge.map.gcj02) { return ll; }
    var p = window.wangge.map.gcj02([ll[1], ll[0]]);
    return [p.lat, p.lng];
  },
  tip: function (feature, layer) {
    var p = feature.properties || {};
    if ((p.k === "w" || p.k === "r") && p.n) {
      var label = document.createElement("span");
      label.textContent = String(p.n);  /* names are text, never HTML */
      layer.bindTooltip(label, {className: "wg-tip"});
    }
  }
};

window.dash_clientside = Object.assign({}, window.dash_clientside, {
  wangge_work: {
    toggle: function (nClicks, data, disabled, labels) {
      var playLabel = labels ? labels[0] : "▶", pauseLabel = labels ? labels[1] : "❚❚";
      var ctx = window.dash_clientside.callback_context;
      var trig = (ctx.triggered && ctx.triggered.length) ? ctx.triggered[0].prop_id : "";
      if (trig.indexOf("wtrk-data") === 0 || !data) { return [true, playLabel]; }
      var nowDisabled = !disabled;
      return [nowDisabled, nowDisabled ? playLabel : pauseLabel];
    },
    advance: function (n, value, max, speed) {
      if ((value || 0) >= max) { return window.dash_clientside.no_update; }
      var step = (speed || 1) * 60 * 0.25;  /* track minutes per real second, 4 ticks/s */
      var next = (value || 0) + step;
      return next >= max ? max : next;
    },
    path: function (data) {
      if (!data || !data.ll) { return []; }
      return data.ll.map(function (ll) { return window.wangge.work.shown(ll, data.gcj); });
    },
    place: function (value, data) {
      if (!data || !data.t || !data.t.length) { return [[0, 0], 0, "—"]; }
      var t = data.t, ll = data.ll, target = t[0] + (value || 0) * 1000;
      var lo = 0, hi = t.length - 1;
      if (target >= t[hi]) { lo = hi; } else {
        while (hi - lo > 1) { var mid = (lo + hi) >> 1; if (t[mid] <= target) { lo = mid; } else { hi = mid; } }
      }
      var pos = ll[lo];
      if (lo < t.length - 1 && t[lo + 1] > t[lo]) {
        var f = Math.max(0, Math.min(1, (target - t[lo]) / (t[lo + 1] - t[lo])));
        pos = [ll[lo][0] + (ll[lo + 1][0] - ll[lo][0]) * f, ll[lo][1] + (ll[lo + 1][1] - ll[lo][1]) * f];
      }
      var when = new Date(Math.min(target, t[t.length - 1]));
      var text = when.toLocaleTimeString("zh-CN", {timeZone: data.tz || "Asia/Shanghai", hour12: false});
      return [window.wangge.work.shown(pos, data.gcj), 8, text];
    }
  }
});
