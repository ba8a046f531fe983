"""``DjangoStore``: a ChatKit store on the Django ORM (the ``chatkit_stores`` app's models).

Usage::

    from chatkit_adapters.stores.django import DjangoStore

    store = DjangoStore()                      # the default database
    store = DjangoStore(using="chat")          # another DATABASES alias
    store = DjangoStore(user_id=lambda ctx: ctx.team_id)

It keeps the guarantees of :class:`chatkit_adapters.stores.SQLStore` (the same contract
suites run against both): JSON documents, every row and query scoped to the user key,
ordering by ``created_at`` then insertion order with keyset pagination, upserts that keep
their place, items only in an existing thread of the same user.

Every call goes through Django's async ORM (``afirst``, ``abulk_create(update_conflicts=
True)``, ``adelete``, ``async for``): under ASGI it runs on the request's loop, under WSGI
on chatkit-adapters' background loop, and the ORM does its work in Django's sync thread.
Each call is one statement in autocommit (a thread deletion is one ``atomic`` block), so a
cancelled call leaves all or nothing of its write.

The user key: the ``user_id`` option, by default ``context.user_id`` /
``context["user_id"]``, else ``str(context.user.pk)`` for a context carrying an
authenticated Django user (evaluate ``request.user`` in the context factory, which runs in
a sync thread). An anonymous user is refused with ``PermissionError``.
"""

from __future__ import annotations

from typing import Any, Generic

from chatkit.store import NotFoundError, Store
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from django.db import IntegrityError, connections, router
from django.db.models import Q, QuerySet
from typing_extensions import TypeVar

from .._common import (
    ATTACHMENT,
    ITEM,
    UserId,
    attachment_not_found,
    check_limit,
    default_user_id,
    descending,
    item_not_found,
    micros,
    page,
    thread_dict,
    thread_not_found,
)
from .models import ChatKitAttachment, ChatKitItem, ChatKitThread

__all__ = ["DjangoStore", "django_user_id"]

TContext = TypeVar("TContext", default=Any)


def django_user_id(context: Any) -> str:
    """``context.user_id`` / ``context["user_id"]``, else the pk of ``context.user``.

    Usage: the default of ``DjangoStore(user_id=...)``.
    """
    try:
        return default_user_id(context)
    except TypeError:
        user = getattr(context, "user", None)
        if user is None:
            raise
    if not getattr(user, "is_authenticated", False):
        raise PermissionError("the ChatKit store needs an authenticated user")
    return str(user.pk)


def _position(desc: bool, at: int, seq: int) -> Q:
    if desc:
        return Q(created_at__lt=at) | Q(created_at=at, seq__lt=seq)
    return Q(created_at__gt=at) | Q(created_at=at, seq__gt=seq)


def _order(desc: bool) -> tuple[str, str]:
    return ("-created_at", "-seq") if desc else ("created_at", "seq")


class DjangoStore(Store[TContext], Generic[TContext]):
    """A ChatKit store in the ``chatkit_stores`` app's tables, through Django's async ORM.

    Usage: ``MyChatKitServer(DjangoStore())`` with ``chatkit_adapters.stores.django`` in
    ``INSTALLED_APPS`` and its migrations applied.
    """

    def __init__(self, *, user_id: UserId | None = None, using: str | None = None) -> None:
        """``user_id`` maps a context to the user key; ``using`` is a ``DATABASES`` alias
        (default: the database router's choice, usually ``"default"``)."""
        self.user_id: UserId = user_id or django_user_id
        self.using = using

    def __repr__(self) -> str:
        return f"{type(self).__name__}(using={self.using!r})"

    def _threads(self) -> QuerySet[ChatKitThread]:
        return ChatKitThread.objects.using(self.using)

    def _items(self) -> QuerySet[ChatKitItem]:
        return ChatKitItem.objects.using(self.using)

    def _attachments(self) -> QuerySet[ChatKitAttachment]:
        return ChatKitAttachment.objects.using(self.using)

    def _conflict_target(self, model: type[Any], fields: list[str]) -> list[str] | None:
        alias = self.using or router.db_for_write(model)
        features = connections[alias].features
        return fields if features.supports_update_conflicts_with_target else None

    async def _page(
        self, rows: QuerySet[Any], after: str | None, key: str, limit: int, order: str, missing: str
    ) -> list[Any]:
        check_limit(limit)
        desc = descending(order)
        if after is not None:
            position = await rows.filter(**{key: after}).values_list("created_at", "seq").afirst()
            if position is None:
                raise NotFoundError(missing)
            rows = rows.filter(_position(desc, *position))
        query = rows.order_by(*_order(desc)).values_list("data", flat=True)[: limit + 1]
        return [data async for data in query]

    # -- threads -------------------------------------------------------------------------

    async def load_thread(self, thread_id: str, context: TContext) -> ThreadMetadata:
        """Load a thread's metadata, or raise ``NotFoundError``."""
        data = (
            await self._threads()
            .filter(user_key=self.user_id(context), thread_id=thread_id)
            .values_list("data", flat=True)
            .afirst()
        )
        if data is None:
            raise NotFoundError(thread_not_found(thread_id))
        return ThreadMetadata.model_validate(data)

    async def save_thread(self, thread: ThreadMetadata, context: TContext) -> None:
        """Insert or update a thread's metadata (an update keeps its place)."""
        row = ChatKitThread(
            user_key=self.user_id(context),
            thread_id=thread.id,
            created_at=micros(thread.created_at),
            data=thread_dict(thread),
        )
        await self._threads().abulk_create(
            [row],
            update_conflicts=True,
            unique_fields=self._conflict_target(ChatKitThread, ["user_key", "thread_id"]),
            update_fields=["created_at", "data"],
        )

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: TContext
    ) -> Page[ThreadMetadata]:
        """A page of the user's threads by creation time; ``after`` is a thread id."""
        rows = await self._page(
            self._threads().filter(user_key=self.user_id(context)),
            after,
            "thread_id",
            limit,
            order,
            thread_not_found(str(after)),
        )
        return page([ThreadMetadata.model_validate(data) for data in rows], limit)

    async def delete_thread(self, thread_id: str, context: TContext) -> None:
        """Delete a thread and all its items (a no-op if it does not exist)."""
        await self._threads().filter(user_key=self.user_id(context), thread_id=thread_id).adelete()

    # -- items ---------------------------------------------------------------------------

    def _thread_items(self, thread_id: str, context: TContext) -> QuerySet[ChatKitItem]:
        return self._items().filter(
            thread__user_key=self.user_id(context), thread__thread_id=thread_id
        )

    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: TContext,
    ) -> Page[ThreadItem]:
        """A page of a thread's items by creation time; ``after`` is an item id."""
        rows = await self._page(
            self._thread_items(thread_id, context),
            after,
            "item_id",
            limit,
            order,
            item_not_found(thread_id, str(after)),
        )
        return page([ITEM.validate_python(data) for data in rows], limit)

    async def _upsert_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        thread_pk = (
            await self._threads()
            .filter(user_key=self.user_id(context), thread_id=thread_id)
            .values_list("seq", flat=True)
            .afirst()
        )
        if thread_pk is None:
            raise NotFoundError(thread_not_found(thread_id))
        row = ChatKitItem(
            thread_id=thread_pk,
            item_id=item.id,
            created_at=micros(item.created_at),
            data=item.model_dump(mode="json"),
        )
        try:
            await self._items().abulk_create(
                [row],
                update_conflicts=True,
                unique_fields=self._conflict_target(ChatKitItem, ["thread", "item_id"]),
                update_fields=["created_at", "data"],
            )
        except IntegrityError as exc:  # the thread was deleted meanwhile
            raise NotFoundError(thread_not_found(thread_id)) from exc

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Append an item to an existing thread (an existing id is replaced in place)."""
        await self._upsert_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert or update an item of an existing thread."""
        await self._upsert_item(thread_id, item, context)

    async def load_item(self, thread_id: str, item_id: str, context: TContext) -> ThreadItem:
        """Load one item of a thread, or raise ``NotFoundError``."""
        data = (
            await self._thread_items(thread_id, context)
            .filter(item_id=item_id)
            .values_list("data", flat=True)
            .afirst()
        )
        if data is None:
            raise NotFoundError(item_not_found(thread_id, item_id))
        return ITEM.validate_python(data)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: TContext) -> None:
        """Delete one item of a thread (a no-op if it does not exist)."""
        await self._thread_items(thread_id, context).filter(item_id=item_id).adelete()

    # -- attachments ---------------------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: TContext) -> None:
        """Insert or update an attachment's metadata."""
        row = ChatKitAttachment(
            user_key=self.user_id(context),
            attachment_id=attachment.id,
            data=attachment.model_dump(mode="json"),
        )
        await self._attachments().abulk_create(
            [row],
            update_conflicts=True,
            unique_fields=self._conflict_target(ChatKitAttachment, ["user_key", "attachment_id"]),
            update_fields=["data"],
        )

    async def load_attachment(self, attachment_id: str, context: TContext) -> Attachment:
        """Load an attachment's metadata, or raise ``NotFoundError``."""
        data = (
            await self._attachments()
            .filter(user_key=self.user_id(context), attachment_id=attachment_id)
            .values_list("data", flat=True)
            .afirst()
        )
        if data is None:
            raise NotFoundError(attachment_not_found(attachment_id))
        return ATTACHMENT.validate_python(data)

    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        """Delete an attachment's metadata (a no-op if it does not exist)."""
        await (
            self._attachments()
            .filter(user_key=self.user_id(context), attachment_id=attachment_id)
            .adelete()
        )
