/* dash_ag_grid's bundle (1.3 MB, ~320 KB compressed) only where a page shows a grid.
 *
 * dashboard/static.py keeps the bundle out of every page's scripts (a "dynamic" resource
 * Dash still serves); this stands in for its namespace: the first AgGrid rendered loads
 * the real bundle, which then replaces window.dash_ag_grid, and renders the real grid
 * with the same props (Dash resolves components by name on every render).
 */
(function () {
  'use strict';
  if (window.dash_ag_grid) {
    return; // the bundle is on the page after all
  }
  var loading = null;

  function prefix() {
    var el = document.getElementById('_dash-config');
    try {
      return JSON.parse(el.textContent).requests_pathname_prefix || '/';
    } catch (e) {
      return '/';
    }
  }

  function load() {
    if (!loading) {
      loading = new Promise(function (resolve, reject) {
        var s = document.createElement('script');
        s.src = prefix() + '_dash-component-suites/dash_ag_grid/dash_ag_grid.min.js';
        s.onload = resolve;
        s.onerror = function () {
          loading = null; // a later grid tries again
          reject(new Error('dash_ag_grid did not load'));
        };
        document.head.appendChild(s);
      });
    }
    return loading;
  }

  function lazy(type) {
    function LazyGrid(props) {
      var R = window.React;
      var got = R.useState(null);
      var Real = got[0];
      var setReal = got[1];
      R.useEffect(function () {
        var live = true;
        load().then(function () {
          var C = window.dash_ag_grid && window.dash_ag_grid[type];
          if (live && C && C !== LazyGrid) {
            setReal(function () { return C; });
          }
        });
        return function () { live = false; };
      }, []);
      return Real ? R.createElement(Real, props) : null;
    }
    return LazyGrid;
  }

  window.dash_ag_grid = { AgGrid: lazy('AgGrid') };
})();
