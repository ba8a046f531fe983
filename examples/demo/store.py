"""The demo's store: :class:`chatkit_adapters.stores.SQLStore` on ``DATABASE_URL``.

Usage::

    from examples.demo.store import open_store

    store = open_store()        # DATABASE_URL, else sqlite:///chatkit-demo.db
    store = open_store("postgresql://u:pw@db/app")   # or mysql://..., mariadb://...

Threads, items and attachments are kept per ``DemoContext.user_id`` (the store's default
``user_id``); see ``chatkit_adapters/stores/sql.py`` for what the store guarantees.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from .context import DemoContext

if TYPE_CHECKING:
    from chatkit_adapters.stores import SQLStore

__all__ = ["DEFAULT_DATABASE_URL", "open_store"]

DEFAULT_DATABASE_URL: Final = "sqlite:///chatkit-demo.db"
"""Used by :func:`open_store` when neither an URL nor ``DATABASE_URL`` is given."""


def open_store(url: str | None = None) -> SQLStore[DemoContext]:
    """The demo's store on ``url`` (default ``DATABASE_URL``, else
    :data:`DEFAULT_DATABASE_URL`); nothing connects until first use (needs the ``sql``
    extra: SQLAlchemy)."""
    from chatkit_adapters.stores import SQLStore

    return SQLStore(url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
