/* Early-warning cue: a short two-tone chime (Web Audio, no sound file, works offline)
   when new orange/red warnings arrive in the user's scope and sound is on. The visible
   cue (a flashing banner) is rendered by the server. */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  wangge_warn: {
    cue: function (ids, sound) {
      if (!ids || !ids.length || !sound || sound.indexOf("on") < 0) {
        return window.dash_clientside.no_update;
      }
      try {
        var Ctx = window.AudioContext || window.webkitAudioContext;
        var ac = window.__wgAudio || (window.__wgAudio = new Ctx());
        [880, 660, 880].forEach(function (f, i) {
          var o = ac.createOscillator(), g = ac.createGain();
          o.frequency.value = f;
          o.connect(g); g.connect(ac.destination);
          var t0 = ac.currentTime + i * 0.22;
          g.gain.setValueAtTime(0.0001, t0);
          g.gain.exponentialRampToValueAtTime(0.3, t0 + 0.02);
          g.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.2);
          o.start(t0); o.stop(t0 + 0.21);
        });
      } catch (e) { /* no audio device: the banner still shows */ }
      return "cue " + ids.join(",");
    }
  }
});
