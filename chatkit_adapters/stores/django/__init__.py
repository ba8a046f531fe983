"""A Django app storing ChatKit threads, items and attachments with the Django ORM.

Usage (``settings.py``, then ``python manage.py migrate``)::

    INSTALLED_APPS = [..., "chatkit_adapters.stores.django"]

and where the ChatKit server is built::

    from chatkit_adapters.stores.django import DjangoStore

    server = MyChatKitServer(DjangoStore())
    # the context factory: lambda request: MyContext(user_id=str(request.user.pk))

The admin (``django.contrib.admin``) lists threads and items per user, read-only.
:class:`DjangoStore` is loaded on first access, so listing the app imports no models early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import DjangoStore

__all__ = ["DjangoStore"]


def __getattr__(name: str) -> Any:
    if name == "DjangoStore":
        from .store import DjangoStore

        return DjangoStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
