"""Grid work (网格工作): track maths, the roster import, track retention."""
