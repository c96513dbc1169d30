// The time machine's "view at" control: keep the address bar on the moment shown while
// a day plays (no navigation: the page stays and the link stays shareable).
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  wangge_tm: {
    url: function (text) {
      if (!text) { return window.dash_clientside.no_update; }
      var u = new URL(window.location.href);
      u.searchParams.set('at', text);
      var q = u.searchParams.toString().replace(/%3A/g, ':');
      window.history.replaceState(window.history.state, '', u.pathname + '?' + q);
      return window.dash_clientside.no_update;
    }
  }
});
