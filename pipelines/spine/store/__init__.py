"""SQL history, the system of record: a package whose modules follow (``schema`` first)."""

from pipelines.spine.store.schema import *  # noqa: F403
from pipelines.spine.store.schema import (  # noqa: F401
    _DTYPES,
    _events_of,
    _insert,
    _key_order,
    _recompute,
    _rows_in,
)
