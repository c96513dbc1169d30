"""The time machine: the live picture of the city at a past moment, rebuilt from SQL
history (``reconstruct``: pure functions of rows and the moment; ``state``: the
``LiveState`` read interface over them; ``moment``: the ``?at=`` value)."""
