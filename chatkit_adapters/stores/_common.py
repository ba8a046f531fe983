"""What every store shares, without SQLAlchemy or Django: user keys, JSON, page arguments."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final, TypeVar

from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter

UserId = Callable[[Any], str]
"""Maps a request context to the key that scopes every row (the user, tenant, ...)."""

ITEM: Final[TypeAdapter[ThreadItem]] = TypeAdapter(ThreadItem)
ATTACHMENT: Final[TypeAdapter[Attachment]] = TypeAdapter(Attachment)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_METADATA_FIELDS: Final = frozenset(ThreadMetadata.model_fields)
_T = TypeVar("_T")


def default_user_id(context: Any) -> str:
    """The user key of a context: ``context.user_id``, or ``context["user_id"]`` for a mapping.

    Usage: ``SQLStore(url, user_id=lambda context: context.tenant)`` replaces it.
    Raises ``TypeError`` when the context has no user id: a store never guesses a user.
    """
    if isinstance(context, Mapping):
        value = context.get("user_id")
    else:
        value = getattr(context, "user_id", None)
    if value is None or value == "":
        raise TypeError(
            f"the store cannot tell the user of a {type(context).__name__} context: give it "
            "a user_id attribute (or key), or pass user_id=<callable> to the store"
        )
    return str(value)


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, UTC (a naive datetime is local time, as in ChatKit)."""
    return (moment.astimezone(timezone.utc) - _EPOCH) // timedelta(microseconds=1)


def thread_json(thread: ThreadMetadata) -> str:
    """Only the metadata of ``thread`` (ChatKit sometimes passes a full ``Thread``)."""
    extra = set(type(thread).model_fields) - _METADATA_FIELDS
    return thread.model_dump_json(exclude=extra or None)


def thread_dict(thread: ThreadMetadata) -> dict[str, Any]:
    """:func:`thread_json` as a JSON-compatible dict."""
    extra = set(type(thread).model_fields) - _METADATA_FIELDS
    return thread.model_dump(mode="json", exclude=extra or None)


def descending(order: str) -> bool:
    """Validate a ChatKit ``order`` argument; return whether it is descending."""
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    return order == "desc"


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit!r}")


def page(rows: Sequence[_T], limit: int) -> Page[_T]:
    """A page from up to ``limit + 1`` parsed rows (the extra one says there is more)."""
    data = list(rows[:limit])
    has_more = len(rows) > limit
    after = getattr(data[-1], "id", None) if has_more and data else None
    return Page(data=data, has_more=has_more, after=after)


def thread_not_found(thread_id: str) -> str:
    return f"Thread {thread_id} not found"


def item_not_found(thread_id: str, item_id: str) -> str:
    return f"Item {item_id} not found in thread {thread_id}"


def attachment_not_found(attachment_id: str) -> str:
    return f"Attachment {attachment_id} not found"
