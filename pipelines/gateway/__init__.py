"""The ingest gateway: phones (OsmAnd), hotlines (Open311, JSON batches) and cameras
(Frigate over MQTT or HTTP) feed Wangge in their own protocols, into the feeds' streams.

One module per protocol (``osmand``, ``open311``, ``frigate``, ``batch``, ``health``),
each registering a :class:`~pipelines.gateway.registry.Protocol`; ``app`` builds the ASGI
app from the registry; ``core`` holds what handlers share (credentials, rate limits,
registries, the atomic publish); ``mqtt`` subscribes to Frigate; ``broker`` starts an
embedded MQTT broker for laptops; ``server`` runs it all (``wangge gateway``).
"""
