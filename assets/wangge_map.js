/* Clientside functions for dash-leaflet (referenced as {variable: "wangge.map.*"}).
   Geometry is loaded once from a cacheable URL; each refresh only sends `hideout`:
   values by feature index + colour breaks, and this function restyles the layer. */
window.wangge = Object.assign({}, window.wangge, {
  map: {
    style: function (feature, context) {
      var h = (context && context.hideout) || {};
      var i = feature.properties.i;
      var v = h.values ? h.values[i] : undefined;
      var color = "#1b2d45";
      if (v !== undefined && v !== null && h.breaks && h.colors) {
        var k = 0;
        while (k < h.breaks.length - 1 && v > h.breaks[k]) { k++; }
        color = h.colors[Math.min(k, h.colors.length - 1)];
      }
      var selected = h.selected && feature.properties.id === h.selected;
      return {
        fillColor: color,
        fillOpacity: h.thin ? 0.85 : 0.72,
        color: selected ? "#ffffff" : (h.thin ? "#0b1a2b" : "#8fb8de"),
        weight: selected ? 3 : (h.thin ? 0.25 : 1.2),
        opacity: 0.9
      };
    },
    tooltip: function (feature, layer) {
      if (feature.properties && feature.properties.n) {
        /* Names may come from an imported file: always text, never HTML. */
        var label = document.createElement("span");
        label.textContent = String(feature.properties.n);
        layer.bindTooltip(label, {sticky: true, className: "wg-tip"});
      }
    },
    point: function (feature, latlng) {
      var p = feature.properties || {};
      return L.circleMarker(latlng, {
        radius: p.r || 4, color: p.c || "#56ccf2", fillColor: p.c || "#56ccf2",
        fillOpacity: 0.9, weight: p.k === "inc" ? 2 : 1
      });
    },
    /* WGS-84 → GCJ-02 for Chinese tile layers (Amap and the like). Display only. */
    gcj02: function (coords) {
      var lon = coords[0], lat = coords[1];
      var a = 6378245.0, ee = 0.00669342162296594323, PI = Math.PI;
      function tLat(x, y) {
        var r = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
        r += (20 * Math.sin(6 * x * PI) + 20 * Math.sin(2 * x * PI)) * 2 / 3;
        r += (20 * Math.sin(y * PI) + 40 * Math.sin(y / 3 * PI)) * 2 / 3;
        r += (160 * Math.sin(y / 12 * PI) + 320 * Math.sin(y * PI / 30)) * 2 / 3;
        return r;
      }
      function tLon(x, y) {
        var r = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
        r += (20 * Math.sin(6 * x * PI) + 20 * Math.sin(2 * x * PI)) * 2 / 3;
        r += (20 * Math.sin(x * PI) + 40 * Math.sin(x / 3 * PI)) * 2 / 3;
        r += (150 * Math.sin(x / 12 * PI) + 300 * Math.sin(x / 30 * PI)) * 2 / 3;
        return r;
      }
      var dLat = tLat(lon - 105, lat - 35), dLon = tLon(lon - 105, lat - 35);
      var rad = lat / 180 * PI, m = Math.sin(rad);
      m = 1 - ee * m * m;
      var s = Math.sqrt(m);
      dLat = (dLat * 180) / ((a * (1 - ee)) / (m * s) * PI);
      dLon = (dLon * 180) / (a / s * Math.cos(rad) * PI);
      return L.latLng(lat + dLat, lon + dLon);
    }
  }
});
