/* Live push (dashboard/push/, README "Live push"): one EventSource per page stream.
 *
 * Each "tick" event carries the refresh callback's answer as Dash made it
 * ({"multi": true, "response": {id: {prop: value}}}); its outputs are applied with
 * dash_clientside.set_props, the same outputs the polling callback updates. While the
 * stream delivers, the page's polling interval is paused; when it stops delivering
 * (server restarting, network, proxy) polling resumes at once, the stale mark shows when
 * nothing updated the page for a while, and a watchdog reopens the stream by itself. */
(function () {
  var streams = {};  // by page: "pan", "wall", "work"
  var SILENT_TICKS = 2.5;  // no tick for this many refresh periods: the stream is down

  function now() { return Date.now(); }
  function dc() { return window.dash_clientside; }

  function base(cfg) {
    var url = (cfg && cfg.url) || "";
    if (/^:\d+$/.test(url)) {  // the page's host on another port
      return window.location.protocol + "//" + window.location.hostname + url;
    }
    return url;
  }

  function hhmmss(ms, tz) {
    if (!ms) { return "—"; }
    return new Date(ms).toLocaleTimeString("zh-CN", {timeZone: tz || "Asia/Shanghai", hour12: false});
  }

  function Stream(page, ids, cfg, query) {
    this.page = page;
    this.ids = ids;  // {tick, stale, last}
    this.cfg = cfg;
    this.url = base(cfg) + "/push/" + page + "?" + query;
    this.es = null;
    this.polling = null;  // unknown: the layout's own value
    this.pushed = now();  // the last tick received (grace: as if just now)
    this.updated = now();  // the last update of the page (push or poll)
    this.lastMs = null;  // the data's time of the last update
    this.stale = false;
    this.retryAt = 0;
    this.backoff = 1000;
    this.openedAt = 0;
    this.pushes = 0;  // ticks received over the stream
    this.updates = 0;  // page updates seen (stream or polling)
  }

  Stream.prototype.setPolling = function (on) {
    if (this.polling === on) { return; }
    this.polling = on;
    try { dc().set_props(this.ids.tick, {disabled: !on}); } catch (e) { /* page gone */ }
  };

  Stream.prototype.apply = function (payload) {
    var resp = payload && payload.response;
    if (!resp) { return; }
    Object.keys(resp).forEach(function (id) {
      try { dc().set_props(id, resp[id]); } catch (e) { /* not on this page */ }
    });
    var last = resp[this.ids.last];
    if (last && last.data) { this.lastMs = last.data; }
  };

  Stream.prototype.open = function () {
    var self = this;
    var es;
    try {
      es = new EventSource(this.url, {withCredentials: true});
    } catch (e) {
      this.retryAt = now() + this.backoff;
      return;
    }
    this.es = es;
    this.openedAt = now();
    es.addEventListener("tick", function (ev) {
      if (self.es !== es) { return; }
      var payload;
      try { payload = JSON.parse(ev.data); } catch (e) { return; }
      self.pushed = self.updated = now();
      self.pushes += 1;
      self.stale = false;
      self.backoff = 1000;
      self.apply(payload);
      self.setPolling(false);
    });
    es.addEventListener("close", function () {  // the session ended or lost the right
      es.close();
      if (self.es === es) { self.es = null; }
      self.retryAt = now() + 30000;
      self.setPolling(true);  // the server answers the page's polling (login, refusal)
    });
    es.onerror = function () {
      if (es.readyState === 2) {  // closed for good (an HTTP error): the watchdog retries
        if (self.es === es) { self.es = null; }
        self.retryAt = now() + self.backoff;
        self.backoff = Math.min(self.backoff * 2, 30000);
      }
    };
  };

  Stream.prototype.close = function () {
    if (this.es) { this.es.close(); }
    this.es = null;
  };

  Stream.prototype.watch = function () {
    var period = (this.cfg && this.cfg.refresh_ms) || 5000;
    var t = now();
    var silent = t - this.pushed > SILENT_TICKS * period;
    if (silent) {
      this.setPolling(true);  // the fallback, until the stream delivers again
      if (this.es && t - this.openedAt > SILENT_TICKS * period) {
        this.close();  // open but silent (a proxy or a server that went away): reopen
        this.retryAt = t;
      }
    }
    if (!this.es && t >= this.retryAt) { this.open(); }
    // stale: the stream has worked on this page, and neither it nor polling updates it now
    // (a page without a push server keeps the polling callback's own stale handling)
    if (!this.stale && this.pushes > 0 && t - this.updated > SILENT_TICKS * period) {
      this.stale = true;
      var text = ((this.cfg && this.cfg.stale) || "%T%").replace("%T%", hhmmss(this.lastMs, this.cfg && this.cfg.tz));
      try {
        dc().set_props(this.ids.stale, {children: {
          type: "Span", namespace: "dash_html_components",
          props: {children: text, className: "wg-stale", id: "stale-mark"}
        }});
      } catch (e) { /* page gone */ }
    }
  };

  setInterval(function () {
    Object.keys(streams).forEach(function (page) {
      var s = streams[page];
      if (!document.getElementById(s.ids.stale)) {  // the page was left
        s.close();
        delete streams[page];
        return;
      }
      s.watch();
    });
  }, 1000);

  function query(params) {
    return Object.keys(params).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
    }).join("&");
  }

  /* (Re)open the page's stream when what it shows changes; note every page update. */
  function follow(page, ids, cfg, params, last) {
    var nu = dc().no_update;
    if (!cfg || typeof window.EventSource === "undefined") { return nu; }
    // a page viewing a past moment (?at=…) shows no live ticks: it keeps its own callbacks
    if (/[?&]at=/.test(window.location.search)) {
      if (streams[page]) { streams[page].close(); delete streams[page]; }
      return nu;
    }
    var q = query(params);
    var s = streams[page];
    if (!s || s.url !== base(cfg) + "/push/" + page + "?" + q) {
      if (s) { s.close(); }
      s = streams[page] = new Stream(page, ids, cfg, q);
      s.open();
    }
    if (last && last !== s.lastMs) {  // an update (from the stream or from polling)
      s.lastMs = last;
      s.updates += 1;
      s.updated = now();
      s.stale = false;
    }
    return nu;
  }

  /* What a page's stream is doing (for operators in the console, and the browser tests). */
  window.wangge_push_status = function (page) {
    var s = streams[page];
    if (!s) { return null; }
    return {open: !!(s.es && s.es.readyState === 1), pushes: s.pushes, updates: s.updates,
            polling: s.polling !== false, stale: s.stale};
  };

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    wangge_push: {
      panorama: function (area, metric, allgrids, last, lang, cfg) {
        var grids = Array.isArray(allgrids) && allgrids.indexOf("all") >= 0;
        return follow("pan", {tick: "pan-tick", stale: "pan-stale", last: "pan-last"}, cfg,
          {area: area || "", metric: metric || "open", grids: grids ? "1" : "", lang: lang || ""}, last);
      },
      wall: function (state, vh, last, lang, cfg) {
        state = state || {};
        return follow("wall", {tick: "wall-tick", stale: "wall-stale", last: "wall-last"}, cfg,
          {area: state.area || "", metric: state.metric || "open", vh: vh || 1080, lang: lang || ""}, last);
      },
      work: function (area, last, lang, cfg) {
        return follow("work", {tick: "work-tick", stale: "work-stale", last: "work-last"}, cfg,
          {area: area || "", lang: lang || ""}, last);
      }
    }
  });
})();
