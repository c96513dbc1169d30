"""The pages: one package per page (layout, callbacks, pure queries, page-only helpers)."""
