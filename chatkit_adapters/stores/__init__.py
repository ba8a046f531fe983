"""Production ChatKit stores: one SQL store for every framework, and a Django ORM store.

Usage::

    from chatkit_adapters.stores import SQLStore

    store = SQLStore("postgresql://app:secret@db/app")   # or sqlite:///chatkit.db, mysql://...
    server = MyChatKitServer(store)

- :class:`SQLStore` (``pip install 'chatkit-adapters[sql]'``, plus ``[postgres]`` or
  ``[mysql]``): SQLAlchemy 2 Core on SQLite (the stdlib driver on the store's threads),
  PostgreSQL (psycopg 3, async) and MySQL/MariaDB (asyncmy, async).
  ``python -m chatkit_adapters.stores upgrade URL`` applies its schema migrations.
- ``chatkit_adapters.stores.django``: a Django app for ``INSTALLED_APPS`` with
  ``chatkit_adapters.stores.django.DjangoStore`` on the Django ORM.

Importing this package imports neither SQLAlchemy nor Django: :class:`SQLStore` is loaded
on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import default_user_id

if TYPE_CHECKING:
    from .sql import SCHEMA_VERSION, SchemaError, SQLStore

__all__ = ["SCHEMA_VERSION", "SQLStore", "SchemaError", "default_user_id"]

_LAZY = {"SQLStore", "SchemaError", "SCHEMA_VERSION"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import sql

        return getattr(sql, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
