/* Grid work (网格工作): cluster / worker markers and the track replay, in the browser.
   Replay: one or more workers on one time axis; the slider is seconds since the earliest
   point (data.t0). Each worker's marker (pool slot i = data.workers[i]) is placed by
   interpolating between the two surrounding points of its own track, so playback is smooth
   at any speed; before its first point a worker's marker is hidden. */
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
    var p = feature.properties || {};
    return L.circleMarker(latlng, {
      radius: 6, color: p.c || "#ffffff", weight: 3, fillColor: "#f2994a", fillOpacity: 0.95
    });
  },
  trackStyle: function (feature) {
    var p = feature.properties || {};
    return {color: p.c || "#41c7ff", weight: 3, opacity: 0.85, interactive: false};
  },
  /* a worker's position at time `target` (ms): interpolated, or null before its first point */
  at: function (w, target) {
    var t = w.t, ll = w.ll;
    if (!t || !t.length || target < t[0]) { return null; }
    var lo = 0, hi = t.length - 1;
    if (target >= t[hi]) { return ll[hi]; }
    while (hi - lo > 1) { var mid = (lo + hi) >> 1; if (t[mid] <= target) { lo = mid; } else { hi = mid; } }
    if (t[hi] <= t[lo]) { return ll[lo]; }
    var f = Math.max(0, Math.min(1, (target - t[lo]) / (t[hi] - t[lo])));
    return [ll[lo][0] + (ll[hi][0] - ll[lo][0]) * f, ll[lo][1] + (ll[hi][1] - ll[lo][1]) * f];
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
    /* on new data: the lines (GeoJSON, [lon, lat]), the markers' tooltips (names as text)
       and the map fitted to the tracks */
    paths: function (data) {
      var ctx = window.dash_clientside.callback_context;
      var slots = ctx.outputs_list[1] || [];
      var workers = (data && data.workers) || [];
      var feats = workers.map(function (w) {
        return {
          type: "Feature",
          geometry: {type: "LineString", coordinates: w.ll.map(function (p) { return [p[1], p[0]]; })},
          properties: {c: w.c}
        };
      });
      var tips = slots.map(function (o) { var w = workers[o.id.i]; return w ? String(w.n) : ""; });
      var view = window.dash_clientside.no_update;
      if (workers.length) {
        var s = 90, n = -90, west = 180, e = -180;
        workers.forEach(function (w) {
          w.ll.forEach(function (p) {
            s = Math.min(s, p[0]); n = Math.max(n, p[0]); west = Math.min(west, p[1]); e = Math.max(e, p[1]);
          });
        });
        var sw = window.wangge.work.shown([s, west], data.gcj), ne = window.wangge.work.shown([n, e], data.gcj);
        view = {bounds: [sw, ne], transition: "flyToBounds", options: {padding: [40, 40], maxZoom: 16}};
      }
      return [{type: "FeatureCollection", features: feats}, tips, view];
    },
    place: function (value, data) {
      var ctx = window.dash_clientside.callback_context;
      var slots = ctx.outputs_list[0] || [];
      var workers = (data && data.workers) || [];
      if (!workers.length) {
        return [slots.map(function () { return [0, 0]; }), slots.map(function () { return 0; }), "—"];
      }
      var target = data.t0 + (value || 0) * 1000;
      var centers = [], radii = [];
      slots.forEach(function (o) {
        var w = workers[o.id.i], pos = w ? window.wangge.work.at(w, target) : null;
        centers.push(pos ? window.wangge.work.shown(pos, data.gcj) : [0, 0]);
        radii.push(pos ? 8 : 0);
      });
      var when = new Date(Math.min(target, data.t1));
      var text = when.toLocaleString("zh-CN", {
        timeZone: data.tz || "Asia/Shanghai", hour12: false, month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit"
      });
      return [centers, radii, text];
    }
  }
});
