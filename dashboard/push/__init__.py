"""Live push: each refresh tick's panel pushed to the browser over one event stream per tab.

A small async server (Starlette under uvicorn, ``python -m dashboard.push``, supervised by
``wangge run``) holds the streams (SSE, ``text/event-stream``): ``/push/pan`` (the
panorama), ``/push/wall`` (the wall screen) and ``/push/work`` (grid work); the pages are
``spec.PAGES``, one record each (``browser.follow`` registers a page's browser side). For
every stream it

* authenticates the viewer by the dashboard's session cookie (the same session store) and
  decides the right to the area on connect (:func:`dashboard.auth.decision_for`), and again
  for every session it holds before each tick it sends (one pipelined session read per
  process per tick): a session gone, expired, revoked or no longer granting the area closes
  its stream; a refusal is answered as such and never reaches a cache or a channel;
* names what the stream is: the callback's outputs and the value key of the shared
  response (:func:`dashboard.responses.stream_of`), never the viewer; viewers of the same
  data in every push process share one Redis channel (:func:`~dashboard.responses.push_channel`);
* each tick, one push process (a lease per stream and tick) takes the tick's finished
  response (the web server's per-tick cache in Redis, or asks the web server to build it
  with one verified viewer's cookie, through the normal permission check) and publishes
  those bytes; every push process forwards them to its viewers. One serialisation per tick
  whatever the number of viewers, pollers included.

The browser side is ``assets/wangge_push.js``: it applies a tick's outputs to the page with
``dash_clientside.set_props`` (the outputs the polling callback updates), pauses the page's
polling while the stream is healthy and resumes it (with the stale mark) when it is not.
"""
