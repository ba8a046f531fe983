"""The contract of the demo's persistent ChatKit store, run against every backend.

The demo's store is :class:`chatkit_adapters.stores.SQLStore` (``open_store``): this suite
runs it on SQLite (a temporary file per test), PostgreSQL (``tests/pgserver.py``) and
MariaDB (``tests/mysqlserver.py``), and runs the store-level tests against
:class:`chatkit_adapters.stores.django.DjangoStore` on SQLite and PostgreSQL too. A
missing server skips with the reason, and fails under ``CI=true`` (``tests/storedb.py``).
Each test works as its own freshly named users, so a shared database needs no cleaning
between tests or runs.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    Attachment,
    AttachmentUploadDescriptor,
    ClientToolCallItem,
    ClosedStatus,
    CustomSummary,
    CustomTask,
    EndOfTurnItem,
    FileAttachment,
    GeneratedImage,
    GeneratedImageItem,
    HiddenContextItem,
    ImageAttachment,
    InferenceOptions,
    LockedStatus,
    Page,
    SDKHiddenContextItem,
    TaskItem,
    ThoughtTask,
    Thread,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
    WidgetItem,
    Workflow,
    WorkflowItem,
)
from chatkit.widgets import Card, Text
from pydantic import AnyUrl

from examples.demo.context import DemoContext
from examples.demo.store import DEFAULT_DATABASE_URL, open_store
from tests.mysqlserver import mariadb_url  # noqa: F401  (the session fixture)
from tests.pgserver import postgres_url  # noqa: F401  (the session fixture, for standalone runs)
from tests.storedb import DJANGO_BACKENDS, SQL_BACKENDS, django_alias, need, sql_url

DemoStore = Store[DemoContext]

pytestmark = pytest.mark.store

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 3, 1, 9, 30, 0, 123456)  # naive, like the datetimes ChatKit creates

# --------------------------------------------------------------------------------------
# Fixtures and builders
# --------------------------------------------------------------------------------------


@pytest.fixture(params=SQL_BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of a database for one SQL backend."""
    return sql_url(request, str(request.param))


@pytest.fixture(params=SQL_BACKENDS + DJANGO_BACKENDS)
def make_store(request: pytest.FixtureRequest) -> Callable[[], DemoStore]:
    """Makes the store under test: SQLStore on each SQL backend, DjangoStore on two."""
    backend = str(request.param)
    if backend in DJANGO_BACKENDS:
        need("django", "the Django store needs django")
        alias = django_alias(request, backend)
        from chatkit_adapters.stores.django import DjangoStore

        return lambda: DjangoStore(using=alias)
    url = sql_url(request, backend)
    return lambda: open_store(url)


@pytest.fixture
async def store(make_store: Callable[[], DemoStore]) -> AsyncIterator[DemoStore]:
    """The store under test, closed after the test."""
    opened = make_store()
    try:
        yield opened
    finally:
        close = getattr(opened, "aclose", None)
        if close is not None:
            await close()


def new_user(name: str = "user") -> DemoContext:
    """A context for a user nobody else has used (tests may share a database)."""
    return DemoContext(f"{name}-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def alice() -> DemoContext:
    return new_user("alice")


@pytest.fixture
def bob() -> DemoContext:
    return new_user("bob")


def thread(thread_id: str = "thr_1", at: datetime = T0, **fields: Any) -> ThreadMetadata:
    return ThreadMetadata(id=thread_id, created_at=at, **fields)


def user_message(thread_id: str, item_id: str, text: str, at: datetime = T0) -> UserMessageItem:
    return UserMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=at,
        content=[UserMessageTextContent(text=text)],
        inference_options=InferenceOptions(),
    )


def assistant_message(
    thread_id: str, item_id: str, text: str, at: datetime = T0
) -> AssistantMessageItem:
    return AssistantMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=at,
        content=[AssistantMessageContent(text=text)],
    )


def file_attachment(attachment_id: str = "atc_file", **fields: Any) -> FileAttachment:
    return FileAttachment(id=attachment_id, name="notes.txt", mime_type="text/plain", **fields)


def image_attachment(attachment_id: str = "atc_image") -> ImageAttachment:
    return ImageAttachment(
        id=attachment_id,
        name="cat.png",
        mime_type="image/png",
        preview_url=AnyUrl("https://example.com/cat.png"),
        upload_descriptor=AttachmentUploadDescriptor(
            url=AnyUrl("https://uploads.example.com/atc_image"),
            method="PUT",
            headers={"x-token": "t"},
        ),
        metadata={"bucket": "demo", "size": 1234},
    )


async def all_items(store: DemoStore, thread_id: str, context: DemoContext) -> list[ThreadItem]:
    page = await store.load_thread_items(thread_id, None, 1000, "asc", context)
    assert page.has_more is False
    return page.data


async def walk_items(
    store: DemoStore, thread_id: str, limit: int, order: str, context: DemoContext
) -> list[list[str]]:
    """Follow the ``after`` cursor through every page; return the ids of each page."""
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        page = await store.load_thread_items(thread_id, after, limit, order, context)
        pages.append([item.id for item in page.data])
        assert len(page.data) <= limit
        if not page.has_more:
            assert page.after is None
            return pages
        assert page.after == page.data[-1].id
        after = page.after


async def walk_threads(
    store: DemoStore, limit: int, order: str, context: DemoContext
) -> list[list[str]]:
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        page = await store.load_threads(limit, after, order, context)
        pages.append([t.id for t in page.data])
        if not page.has_more:
            assert page.after is None
            return pages
        assert page.after == page.data[-1].id
        after = page.after


# --------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_thread_round_trip(store: DemoStore, alice: DemoContext) -> None:
    saved = thread(
        "thr_round",
        title='Trip — ünïcödé "quotes" \x00 and 🎉',
        status=LockedStatus(reason="archived"),
        allowed_image_domains=["example.com"],
        metadata={"previous_response_id": "resp_1", "nested": {"n": [1, 2.5, None, True]}},
    )
    await store.save_thread(saved, alice)

    loaded = await store.load_thread("thr_round", alice)
    assert loaded == saved
    assert loaded.created_at == T0 and loaded.created_at.tzinfo is None
    assert isinstance(loaded.status, LockedStatus)


@pytest.mark.asyncio
async def test_save_thread_upserts(store: DemoStore, alice: DemoContext) -> None:
    original = thread("thr_up", title="First")
    await store.save_thread(original, alice)
    await store.save_thread(original.model_copy(update={"title": "Second"}), alice)
    await store.save_thread(original.model_copy(update={"status": ClosedStatus()}), alice)

    loaded = await store.load_thread("thr_up", alice)
    assert loaded.title == "First"  # the last save wins, whole
    assert isinstance(loaded.status, ClosedStatus)
    page = await store.load_threads(10, None, "asc", alice)
    assert [t.id for t in page.data] == ["thr_up"]


@pytest.mark.asyncio
async def test_save_thread_keeps_only_metadata_of_a_full_thread(
    store: DemoStore, alice: DemoContext
) -> None:
    full = Thread(
        id="thr_full",
        created_at=T0,
        title="Full",
        items=Page(data=[assistant_message("thr_full", "msg_x", "not stored here")]),
    )
    await store.save_thread(full, alice)

    loaded = await store.load_thread("thr_full", alice)
    assert type(loaded) is ThreadMetadata
    assert loaded == ThreadMetadata(id="thr_full", created_at=T0, title="Full")
    assert await all_items(store, "thr_full", alice) == []


@pytest.mark.asyncio
async def test_load_threads_pages_by_created_at(store: DemoStore, alice: DemoContext) -> None:
    # Saved out of order; two share a created_at (then insertion order decides).
    offsets = {"thr_c": 3, "thr_a": 1, "thr_e": 5, "thr_b2": 2, "thr_b1": 2, "thr_d": 4}
    for thread_id, minutes in offsets.items():
        await store.save_thread(thread(thread_id, T0 + timedelta(minutes=minutes)), alice)
    ascending = ["thr_a", "thr_b2", "thr_b1", "thr_c", "thr_d", "thr_e"]

    assert await walk_threads(store, 4, "asc", alice) == [ascending[:4], ascending[4:]]
    assert await walk_threads(store, 2, "desc", alice) == [
        ["thr_e", "thr_d"],
        ["thr_c", "thr_b1"],
        ["thr_b2", "thr_a"],
    ]
    exact = await store.load_threads(6, None, "asc", alice)
    assert [t.id for t in exact.data] == ascending
    assert (exact.has_more, exact.after) == (False, None)
    middle = await store.load_threads(2, "thr_b2", "asc", alice)
    assert [t.id for t in middle.data] == ["thr_b1", "thr_c"]
    assert (middle.has_more, middle.after) == (True, "thr_c")
    # Re-saving a thread (an update) does not move it.
    await store.save_thread(thread("thr_b2", T0 + timedelta(minutes=2), title="renamed"), alice)
    assert [t.id for t in (await store.load_threads(10, None, "asc", alice)).data] == ascending


@pytest.mark.asyncio
async def test_created_at_compares_across_time_zones(store: DemoStore, alice: DemoContext) -> None:
    aware = T0.astimezone(timezone.utc)  # the same instant as T0, written with a zone
    await store.save_thread(thread("thr_t", T0), alice)
    items = [
        user_message("thr_t", "later_aware", "b", aware + timedelta(seconds=1)),
        user_message("thr_t", "earlier_naive", "a", T0 - timedelta(seconds=1)),
        user_message("thr_t", "latest_naive", "c", T0 + timedelta(seconds=2)),
    ]
    for item in items:
        await store.add_thread_item("thr_t", item, alice)

    loaded = await all_items(store, "thr_t", alice)
    assert [i.id for i in loaded] == ["earlier_naive", "later_aware", "latest_naive"]
    assert loaded[1].created_at == aware + timedelta(seconds=1)
    assert loaded[1].created_at.tzinfo is not None


@pytest.mark.asyncio
async def test_delete_thread_removes_its_items(store: DemoStore, alice: DemoContext) -> None:
    for thread_id in ("thr_gone", "thr_kept"):
        await store.save_thread(thread(thread_id), alice)
        for n in range(3):
            await store.add_thread_item(thread_id, user_message(thread_id, f"m{n}", "x"), alice)

    await store.delete_thread("thr_gone", alice)

    with pytest.raises(NotFoundError):
        await store.load_thread("thr_gone", alice)
    with pytest.raises(NotFoundError):
        await store.load_item("thr_gone", "m0", alice)
    assert await all_items(store, "thr_gone", alice) == []
    assert [t.id for t in (await store.load_threads(10, None, "asc", alice)).data] == ["thr_kept"]
    assert [i.id for i in await all_items(store, "thr_kept", alice)] == ["m0", "m1", "m2"]
    # A new thread with the same id starts empty, and deleting twice is harmless.
    await store.save_thread(thread("thr_gone"), alice)
    assert await all_items(store, "thr_gone", alice) == []
    await store.delete_thread("thr_gone", alice)
    await store.delete_thread("thr_gone", alice)


# --------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------


def every_kind_of_item(thread_id: str) -> list[ThreadItem]:
    at = [T0 + timedelta(seconds=n) for n in range(10)]
    return [
        UserMessageItem(
            id="msg_user",
            thread_id=thread_id,
            created_at=at[0],
            content=[
                UserMessageTextContent(text='Hi \x00 "there" \\ 🎉 ünï\n\ttabs'),
                UserMessageTagContent(id="tag_1", text="@doc", data={"k": [1, {"v": None}]}),
            ],
            attachments=[file_attachment(thread_id=thread_id), image_attachment()],
            quoted_text="quoted",
            inference_options=InferenceOptions(model="gpt-test"),
        ),
        assistant_message(thread_id, "msg_assistant", "Hello!", at[1]),
        ClientToolCallItem(
            id="tc_1",
            thread_id=thread_id,
            created_at=at[2],
            call_id="call_1",
            name="lookup",
            arguments={"q": "x", "n": 3},
            status="completed",
            output={"rows": [1, 2]},
        ),
        WidgetItem(
            id="wd_1",
            thread_id=thread_id,
            created_at=at[3],
            widget=Card(children=[Text(value="widget text")]),
            copy_text="copy",
        ),
        TaskItem(
            id="tsk_1",
            thread_id=thread_id,
            created_at=at[4],
            task=CustomTask(title="Task", content="done", status_indicator="complete"),
        ),
        WorkflowItem(
            id="wf_1",
            thread_id=thread_id,
            created_at=at[5],
            workflow=Workflow(
                type="reasoning",
                tasks=[ThoughtTask(content="thinking")],
                summary=CustomSummary(title="Thought"),
                expanded=True,
            ),
        ),
        GeneratedImageItem(
            id="img_1",
            thread_id=thread_id,
            created_at=at[6],
            image=GeneratedImage(id="gi_1", url="https://example.com/gi.png"),
        ),
        HiddenContextItem(
            id="hc_1", thread_id=thread_id, created_at=at[7], content={"secret": [1, 2]}
        ),
        SDKHiddenContextItem(id="shcx_1", thread_id=thread_id, created_at=at[8], content="sdk"),
        EndOfTurnItem(id="eot_1", thread_id=thread_id, created_at=at[9]),
    ]


@pytest.mark.asyncio
async def test_every_item_kind_round_trips(store: DemoStore, alice: DemoContext) -> None:
    await store.save_thread(thread("thr_kinds"), alice)
    items = every_kind_of_item("thr_kinds")
    for item in items:
        await store.add_thread_item("thr_kinds", item, alice)

    assert await all_items(store, "thr_kinds", alice) == items
    for item in items:
        loaded = await store.load_item("thr_kinds", item.id, alice)
        assert type(loaded) is type(item)
        assert loaded == item


@pytest.mark.asyncio
async def test_items_add_save_load_delete(store: DemoStore, alice: DemoContext) -> None:
    await store.save_thread(thread("thr_i"), alice)
    question = user_message("thr_i", "msg_q", "question", T0)
    answer = assistant_message("thr_i", "msg_a", "", T0 + timedelta(seconds=1))
    await store.add_thread_item("thr_i", question, alice)
    await store.add_thread_item("thr_i", answer, alice)

    # save_item updates in place ...
    answer.content = [AssistantMessageContent(text="the answer")]
    await store.save_item("thr_i", answer, alice)
    loaded = await store.load_item("thr_i", "msg_a", alice)
    assert isinstance(loaded, AssistantMessageItem)
    assert loaded.content[0].text == "the answer"
    # ... and inserts an item that is not there yet.
    extra = assistant_message("thr_i", "msg_extra", "extra", T0 + timedelta(seconds=2))
    await store.save_item("thr_i", extra, alice)
    assert [i.id for i in await all_items(store, "thr_i", alice)] == ["msg_q", "msg_a", "msg_extra"]
    # add_thread_item of an existing id replaces it too (no duplicate rows).
    await store.add_thread_item("thr_i", user_message("thr_i", "msg_q", "edited", T0), alice)
    items = await all_items(store, "thr_i", alice)
    assert [i.id for i in items] == ["msg_q", "msg_a", "msg_extra"]
    assert items[0] == user_message("thr_i", "msg_q", "edited", T0)

    await store.delete_thread_item("thr_i", "msg_a", alice)
    with pytest.raises(NotFoundError):
        await store.load_item("thr_i", "msg_a", alice)
    assert [i.id for i in await all_items(store, "thr_i", alice)] == ["msg_q", "msg_extra"]
    await store.delete_thread_item("thr_i", "msg_a", alice)  # idempotent
    await store.delete_thread_item("thr_i", "never_there", alice)
    assert await store.load_thread("thr_i", alice) == thread("thr_i")


@pytest.mark.asyncio
async def test_items_are_scoped_to_their_thread(store: DemoStore, alice: DemoContext) -> None:
    await store.save_thread(thread("thr_1"), alice)
    await store.save_thread(thread("thr_2"), alice)
    await store.add_thread_item("thr_1", user_message("thr_1", "same_id", "in one"), alice)
    await store.add_thread_item("thr_2", user_message("thr_2", "same_id", "in two"), alice)

    one = await store.load_item("thr_1", "same_id", alice)
    two = await store.load_item("thr_2", "same_id", alice)
    assert one.thread_id == "thr_1" and two.thread_id == "thr_2"
    await store.delete_thread_item("thr_1", "same_id", alice)
    assert await store.load_item("thr_2", "same_id", alice) == two
    with pytest.raises(NotFoundError):
        await store.load_item("thr_1", "same_id", alice)


@pytest.mark.asyncio
async def test_item_pagination_both_orders(store: DemoStore, alice: DemoContext) -> None:
    await store.save_thread(thread("thr_p"), alice)
    ids = [f"msg_{n}" for n in range(7)]
    # Inserted in a shuffled order: created_at decides, not insertion.
    for n in (3, 0, 6, 1, 5, 2, 4):
        at = T0 + timedelta(seconds=n)
        await store.add_thread_item("thr_p", user_message("thr_p", ids[n], str(n), at), alice)

    assert await walk_items(store, "thr_p", 3, "asc", alice) == [ids[0:3], ids[3:6], ids[6:]]
    assert await walk_items(store, "thr_p", 3, "desc", alice) == [
        ids[6:3:-1],
        ids[3:0:-1],
        ids[0:1],
    ]
    assert await walk_items(store, "thr_p", 7, "asc", alice) == [ids]
    assert await walk_items(store, "thr_p", 100, "desc", alice) == [ids[::-1]]

    page = await store.load_thread_items("thr_p", "msg_1", 3, "asc", alice)
    assert ([i.id for i in page.data], page.has_more, page.after) == (ids[2:5], True, "msg_4")
    page = await store.load_thread_items("thr_p", "msg_4", 3, "asc", alice)
    assert ([i.id for i in page.data], page.has_more, page.after) == (ids[5:], False, None)
    page = await store.load_thread_items("thr_p", "msg_2", 5, "desc", alice)
    assert ([i.id for i in page.data], page.has_more, page.after) == (
        ["msg_1", "msg_0"],
        False,
        None,
    )
    page = await store.load_thread_items("thr_p", "msg_6", 1, "asc", alice)
    assert (page.data, page.has_more, page.after) == ([], False, None)


@pytest.mark.asyncio
async def test_equal_created_at_keeps_insertion_order(store: DemoStore, alice: DemoContext) -> None:
    await store.save_thread(thread("thr_tie"), alice)
    ids = ["m9", "m1", "m7", "m3", "m5"]  # neither sorted nor reverse-sorted
    for item_id in ids:
        await store.add_thread_item("thr_tie", user_message("thr_tie", item_id, item_id), alice)

    assert await walk_items(store, "thr_tie", 2, "asc", alice) == [ids[0:2], ids[2:4], ids[4:]]
    assert await walk_items(store, "thr_tie", 2, "desc", alice) == [
        ["m5", "m3"],
        ["m7", "m1"],
        ["m9"],
    ]
    # An update keeps the item's place.
    await store.save_item("thr_tie", user_message("thr_tie", "m1", "changed"), alice)
    assert [i.id for i in await all_items(store, "thr_tie", alice)] == ids


@pytest.mark.asyncio
async def test_bad_page_arguments(store: DemoStore, alice: DemoContext) -> None:
    await store.save_thread(thread("thr_b"), alice)
    with pytest.raises(ValueError, match="order"):
        await store.load_thread_items("thr_b", None, 10, "sideways", alice)
    with pytest.raises(ValueError, match="limit"):
        await store.load_thread_items("thr_b", None, 0, "asc", alice)
    with pytest.raises(ValueError, match="order"):
        await store.load_threads(10, None, "random; DROP TABLE chatkit_threads", alice)
    assert await store.load_thread("thr_b", alice) == thread("thr_b")


@pytest.mark.asyncio
async def test_not_found(store: DemoStore, alice: DemoContext) -> None:
    await store.save_thread(thread("thr_nf"), alice)
    await store.add_thread_item("thr_nf", user_message("thr_nf", "msg_1", "x"), alice)

    with pytest.raises(NotFoundError):
        await store.load_thread("thr_missing", alice)
    with pytest.raises(NotFoundError):
        await store.load_item("thr_nf", "msg_missing", alice)
    with pytest.raises(NotFoundError):
        await store.load_item("thr_missing", "msg_1", alice)
    with pytest.raises(NotFoundError):
        await store.load_attachment("atc_missing", alice)
    with pytest.raises(NotFoundError):  # an unknown cursor
        await store.load_thread_items("thr_nf", "msg_missing", 10, "asc", alice)
    with pytest.raises(NotFoundError):
        await store.load_threads(10, "thr_missing", "desc", alice)
    # Items cannot be written to a thread that does not exist.
    with pytest.raises(NotFoundError):
        await store.add_thread_item("thr_missing", user_message("thr_missing", "m", "x"), alice)
    with pytest.raises(NotFoundError):
        await store.save_item("thr_missing", user_message("thr_missing", "m", "x"), alice)
    assert await all_items(store, "thr_missing", alice) == []
    # None of that disturbed what exists.
    assert [i.id for i in await all_items(store, "thr_nf", alice)] == ["msg_1"]


# --------------------------------------------------------------------------------------
# Attachments
# --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_attachments(store: DemoStore, alice: DemoContext) -> None:
    document, image = file_attachment(metadata={"k": "v"}), image_attachment()
    await store.save_attachment(document, alice)
    await store.save_attachment(image, alice)

    loaded_image = await store.load_attachment(image.id, alice)
    assert isinstance(loaded_image, ImageAttachment)
    assert loaded_image == image
    assert await store.load_attachment(document.id, alice) == document

    # Upsert: ChatKit saves the attachment again once it belongs to a thread.
    attached: Attachment = document.model_copy(update={"thread_id": "thr_9"})
    await store.save_attachment(attached, alice)
    assert (await store.load_attachment(document.id, alice)).thread_id == "thr_9"

    await store.delete_attachment(document.id, alice)
    with pytest.raises(NotFoundError):
        await store.load_attachment(document.id, alice)
    await store.delete_attachment(document.id, alice)  # idempotent
    assert await store.load_attachment(image.id, alice) == image


# --------------------------------------------------------------------------------------
# Isolation between users
# --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_users_are_isolated(store: DemoStore, alice: DemoContext, bob: DemoContext) -> None:
    await store.save_thread(thread("thr_alice", title="Alice's"), alice)
    await store.add_thread_item("thr_alice", user_message("thr_alice", "msg_1", "private"), alice)
    await store.save_attachment(file_attachment("atc_alice"), alice)

    # Bob sees nothing of Alice's ...
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_alice", bob)
    with pytest.raises(NotFoundError):
        await store.load_item("thr_alice", "msg_1", bob)
    with pytest.raises(NotFoundError):
        await store.load_attachment("atc_alice", bob)
    assert (await store.load_thread_items("thr_alice", None, 10, "asc", bob)).data == []
    with pytest.raises(NotFoundError):
        await store.load_thread_items("thr_alice", "msg_1", 10, "asc", bob)
    assert (await store.load_threads(10, None, "desc", bob)).data == []
    with pytest.raises(NotFoundError):
        await store.load_threads(10, "thr_alice", "desc", bob)
    # ... cannot write into it or delete it ...
    with pytest.raises(NotFoundError):
        await store.add_thread_item("thr_alice", user_message("thr_alice", "msg_b", "x"), bob)
    with pytest.raises(NotFoundError):
        await store.save_item("thr_alice", user_message("thr_alice", "msg_1", "overwrite"), bob)
    await store.delete_thread_item("thr_alice", "msg_1", bob)
    await store.delete_attachment("atc_alice", bob)
    await store.delete_thread("thr_alice", bob)
    # ... and the same ids are his own, separate rows.
    await store.save_thread(thread("thr_alice", title="Bob's"), bob)
    await store.add_thread_item("thr_alice", user_message("thr_alice", "msg_1", "bob's"), bob)
    await store.save_attachment(file_attachment("atc_alice", metadata={"owner": "bob"}), bob)

    assert (await store.load_thread("thr_alice", alice)).title == "Alice's"
    assert (await store.load_thread("thr_alice", bob)).title == "Bob's"
    assert await all_items(store, "thr_alice", alice) == [
        user_message("thr_alice", "msg_1", "private")
    ]
    assert await all_items(store, "thr_alice", bob) == [user_message("thr_alice", "msg_1", "bob's")]
    assert (await store.load_attachment("atc_alice", alice)).metadata is None
    assert (await store.load_attachment("atc_alice", bob)).metadata == {"owner": "bob"}
    await store.delete_thread("thr_alice", bob)
    assert [i.id for i in await all_items(store, "thr_alice", alice)] == ["msg_1"]
    assert [t.id for t in (await store.load_threads(10, None, "asc", alice)).data] == ["thr_alice"]


# --------------------------------------------------------------------------------------
# Concurrency, cancellation, persistence
# --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_concurrent_writes_all_persist(store: DemoStore, alice: DemoContext) -> None:
    await store.save_thread(thread("thr_many"), alice)
    items = [
        assistant_message("thr_many", f"msg_{n:02d}", f"text {n}", T0 + timedelta(milliseconds=n))
        for n in range(50)
    ]

    await asyncio.gather(*(store.add_thread_item("thr_many", item, alice) for item in items))

    assert await all_items(store, "thr_many", alice) == items
    # Mixed concurrent reads and writes, on other threads too, all land.
    results = await asyncio.gather(
        *(
            store.save_thread(thread(f"thr_c{n}", T0 + timedelta(seconds=n)), alice)
            for n in range(20)
        ),
        *(store.load_item("thr_many", item.id, alice) for item in items[:20]),
        *(store.delete_thread_item("thr_many", item.id, alice) for item in items[40:]),
    )
    assert results[20:40] == items[:20]
    assert len(await all_items(store, "thr_many", alice)) == 40
    assert len((await store.load_threads(100, None, "asc", alice)).data) == 21


@pytest.mark.asyncio
async def test_cancelled_calls_leave_the_store_consistent(
    store: DemoStore, alice: DemoContext
) -> None:
    """Cancel every other call at staggered moments: before, during or after its write."""
    await store.save_thread(thread("thr_cancel"), alice)
    items = [user_message("thr_cancel", f"m{n:02d}", "x" * 2000, T0) for n in range(40)]
    tasks = [asyncio.create_task(store.add_thread_item("thr_cancel", i, alice)) for i in items]
    for n, task in enumerate(tasks):
        await asyncio.sleep(0.0005 * (n % 4))
        if n % 2:
            task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    stored = await all_items(store, "thr_cancel", alice)
    finished = {item.id for item, outcome in zip(items, outcomes, strict=True) if outcome is None}
    assert not [o for o in outcomes if o is not None and not isinstance(o, asyncio.CancelledError)]
    assert {item.id for item in items[::2]} <= finished  # never cancelled: all succeeded
    # Every call that returned is durable; a cancelled one is there whole or not at all.
    assert finished <= {item.id for item in stored}
    assert all(item in items for item in stored)
    # The store keeps working afterwards.
    await store.add_thread_item("thr_cancel", user_message("thr_cancel", "after", "ok"), alice)
    assert (await store.load_item("thr_cancel", "after", alice)).id == "after"


@asynccontextmanager
async def database_write_lock(database_url: str) -> AsyncIterator[None]:
    """Another connection holds the lock item writes need, until the block ends."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from chatkit_adapters.stores.sql import normalize_url

    url = normalize_url(database_url)
    if url.get_backend_name() == "sqlite":
        other = sqlite3.connect(str(url.database), isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield
            other.execute("ROLLBACK")
        finally:
            other.close()
        return
    if url.get_backend_name() == "postgresql":
        lock = "LOCK TABLE chatkit_items IN SHARE ROW EXCLUSIVE MODE"
    else:  # MariaDB: an item insert reads its thread row with a shared lock
        lock = "SELECT id FROM chatkit_threads FOR UPDATE"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as holder:
            await holder.begin()
            await holder.execute(text(lock))
            yield
            await holder.rollback()
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_call_cancelled_while_the_database_is_busy(
    database_url: str, alice: DemoContext
) -> None:
    """A client gone while its write waits on the database: nothing half-written, no wedge."""
    async with open_store(database_url) as store:
        await store.save_thread(thread("thr_busy"), alice)
        blocked = user_message("thr_busy", "blocked", "never saved")
        async with database_write_lock(database_url):
            task = asyncio.create_task(store.add_thread_item("thr_busy", blocked, alice))
            await asyncio.sleep(0.3)
            assert not task.done()  # really waiting for the database
            task.cancel()
            await asyncio.sleep(0.1)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)

        with pytest.raises(NotFoundError):
            await store.load_item("thr_busy", "blocked", alice)
        await store.add_thread_item("thr_busy", user_message("thr_busy", "next", "saved"), alice)
        assert [i.id for i in await all_items(store, "thr_busy", alice)] == ["next"]


@pytest.mark.asyncio
async def test_another_store_on_the_same_database_sees_everything_at_once(
    database_url: str, alice: DemoContext
) -> None:
    """Like another worker process: no caching, every write committed on return."""
    async with open_store(database_url) as first, open_store(database_url) as second:
        await first.save_thread(thread("thr_shared", title="v1"), alice)
        await first.add_thread_item("thr_shared", user_message("thr_shared", "m1", "hi"), alice)
        assert (await second.load_thread("thr_shared", alice)).title == "v1"
        assert [i.id for i in await all_items(second, "thr_shared", alice)] == ["m1"]

        await second.save_thread(thread("thr_shared", title="v2"), alice)
        await second.add_thread_item("thr_shared", user_message("thr_shared", "m2", "yo"), alice)
        assert (await first.load_thread("thr_shared", alice)).title == "v2"
        assert [i.id for i in await all_items(first, "thr_shared", alice)] == ["m1", "m2"]

        await second.delete_thread("thr_shared", alice)
        with pytest.raises(NotFoundError):
            await first.load_thread("thr_shared", alice)

    async with open_store(database_url) as reopened:  # and it all survives a reconnect
        assert (await reopened.load_threads(10, None, "asc", alice)).data == []
        await reopened.save_thread(thread("thr_again"), alice)
    async with open_store(database_url) as reopened:
        assert await reopened.load_thread("thr_again", alice) == thread("thr_again")


@pytest.mark.asyncio
async def test_created_in_one_thread_used_in_other_threads_loops(
    database_url: str, alice: DemoContext
) -> None:
    """Like the sync adapters: a store built at import, used on a background loop and on
    request loops at the same time (SQLStore keeps an engine per loop)."""
    store = open_store(database_url)  # created here, first used on another thread's loop

    async def use() -> list[str]:
        await store.save_thread(thread("thr_bg"), alice)
        await asyncio.gather(
            *(
                store.add_thread_item("thr_bg", user_message("thr_bg", f"m{n}", ""), alice)
                for n in range(10)
            )
        )
        return [i.id for i in await all_items(store, "thr_bg", alice)]

    background_loop = asyncio.new_event_loop()
    runner = threading.Thread(target=background_loop.run_forever, daemon=True)
    runner.start()
    try:
        pending = asyncio.run_coroutine_threadsafe(use(), background_loop)
        ids = await asyncio.wrap_future(pending)
        assert sorted(ids) == [f"m{n}" for n in range(10)]
        # While it is open there, this loop uses it too ...
        assert await store.load_thread("thr_bg", alice) == thread("thr_bg")
        await store.add_thread_item("thr_bg", user_message("thr_bg", "here", ""), alice)
        there = asyncio.run_coroutine_threadsafe(all_items(store, "thr_bg", alice), background_loop)
        assert [i.id for i in await asyncio.wrap_future(there)][-1] == "here"
        # ... and aclose() here closes the background loop's connections on that loop.
        await store.aclose()
    finally:
        background_loop.call_soon_threadsafe(background_loop.stop)
        runner.join(10)
        background_loop.close()

    # A loop that ends without closing the store: the next loop simply connects again.
    for _ in range(2):
        loaded = await asyncio.to_thread(asyncio.run, store.load_thread("thr_bg", alice))
        assert loaded == thread("thr_bg")
    assert len(await all_items(store, "thr_bg", alice)) == 11
    await store.aclose()


def test_unclosed_sqlite_store_does_not_block_interpreter_exit(tmp_path: Path) -> None:
    """aiosqlite's worker thread is not a daemon: an unclosed store used to hang exit."""
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    script = textwrap.dedent(
        f"""
        import asyncio
        from examples.demo.context import DemoContext
        from examples.demo.store import open_store
        from chatkit.types import ThreadMetadata
        from datetime import datetime

        STORE = open_store({url!r})

        async def main():
            thread = ThreadMetadata(id="thr_exit", created_at=datetime.now())
            await STORE.save_thread(thread, DemoContext("u"))

        asyncio.run(main())
        print("saved")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "saved"

    async def check() -> ThreadMetadata:
        async with open_store(url) as store:
            return await store.load_thread("thr_exit", DemoContext("u"))

    assert asyncio.run(check()).id == "thr_exit"


# --------------------------------------------------------------------------------------
# Through a real ChatKit server
# --------------------------------------------------------------------------------------


class EchoServer(ChatKitServer[DemoContext]):
    """Answers every message with ``"echo: <text>"``; ``"hang"`` streams then never ends."""

    def __init__(self, store: DemoStore) -> None:
        super().__init__(store)
        self.hanging = asyncio.Event()

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: DemoContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        assert input_user_message is not None
        text = " ".join(
            part.text
            for part in input_user_message.content
            if isinstance(part, UserMessageTextContent)
        )
        reply = AssistantMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=[],
        )
        if text == "hang":
            yield ThreadItemAddedEvent(item=reply)
            yield ThreadItemUpdatedEvent(
                item_id=reply.id,
                update=AssistantMessageContentPartTextDelta(content_index=0, delta="partial"),
            )
            self.hanging.set()
            await asyncio.Event().wait()  # until the client goes away
        if thread.title is None:
            thread.title = f"About {text}"  # ChatKit saves the thread after the stream
        reply.content = [AssistantMessageContent(text=f"echo: {text}")]
        yield ThreadItemDoneEvent(item=reply)


def request(kind: str, **params: Any) -> bytes:
    return json.dumps({"type": kind, "params": params}).encode()


def message(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


async def events(result: StreamingResult | NonStreamingResult) -> list[dict[str, Any]]:
    assert isinstance(result, StreamingResult)
    chunks = [chunk async for chunk in result]
    assert all(chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") for chunk in chunks)
    return [json.loads(chunk[len(b"data: ") :]) for chunk in chunks]


async def call(server: EchoServer, payload: bytes, context: DemoContext) -> Any:
    result = await server.process(payload, context)
    assert isinstance(result, NonStreamingResult)
    return json.loads(result.json)


@pytest.mark.asyncio
async def test_chatkit_round_trip(store: DemoStore, alice: DemoContext, bob: DemoContext) -> None:
    server = EchoServer(store)

    created = await events(
        await server.process(request("threads.create", input=message("hi")), alice)
    )
    assert [e["type"] for e in created] == [
        "thread.created",
        "thread.item.done",
        "stream_options",
        "thread.item.done",
        "thread.updated",
    ]
    thread_id = created[0]["thread"]["id"]

    got = await call(server, request("threads.get_by_id", thread_id=thread_id), alice)
    assert got["id"] == thread_id and got["title"] == "About hi"
    items = got["items"]["data"]
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]
    assert items[0]["content"][0]["text"] == "hi"
    assert items[1]["content"][0]["text"] == "echo: hi"

    more = await events(
        await server.process(
            request("threads.add_user_message", thread_id=thread_id, input=message("again")), alice
        )
    )
    assert more[-1]["item"]["content"][0]["text"] == "echo: again"
    listed = await call(server, request("items.list", thread_id=thread_id, order="desc"), alice)
    texts = [i["content"][0]["text"] for i in listed["data"]]
    assert texts == ["echo: again", "again", "echo: hi", "hi"]
    threads = await call(server, request("threads.list", limit=5), alice)
    assert [t["id"] for t in threads["data"]] == [thread_id]
    stored = await store.load_thread(thread_id, alice)
    assert stored.title == "About hi"

    with pytest.raises(NotFoundError):
        await server.process(request("threads.get_by_id", thread_id=thread_id), bob)
    assert (await call(server, request("threads.list"), bob))["data"] == []

    assert await call(server, request("threads.delete", thread_id=thread_id), alice) == {}
    with pytest.raises(NotFoundError):
        await store.load_thread(thread_id, alice)
    assert await all_items(store, thread_id, alice) == []


@pytest.mark.asyncio
async def test_chatkit_cancel_cleanup_is_persisted(store: DemoStore, alice: DemoContext) -> None:
    """A client that disconnects mid-stream: ChatKit's cleanup writes through the store."""
    server = EchoServer(store)
    seen: list[dict[str, Any]] = []

    async def client() -> None:
        result = await server.process(request("threads.create", input=message("hang")), alice)
        assert isinstance(result, StreamingResult)
        async for chunk in result:
            seen.append(json.loads(chunk[len(b"data: ") :]))

    task = asyncio.create_task(client())
    await asyncio.wait_for(server.hanging.wait(), 10)
    task.cancel()  # the disconnect
    with pytest.raises(asyncio.CancelledError):
        await task

    thread_id = seen[0]["thread"]["id"]
    items = await all_items(store, thread_id, alice)
    assert [type(i).__name__ for i in items] == [
        "UserMessageItem",
        "AssistantMessageItem",
        "SDKHiddenContextItem",
    ]
    partial = items[1]
    assert isinstance(partial, AssistantMessageItem)
    assert partial.content[0].text == "partial"
    got = await call(server, request("threads.get_by_id", thread_id=thread_id), alice)
    assert [i["type"] for i in got["items"]["data"]] == ["user_message", "assistant_message"]


# --------------------------------------------------------------------------------------
# open_store
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///chatkit-demo.db", "chatkit-demo.db"),
        ("sqlite:///data/dir/x.db", "data/dir/x.db"),
        ("sqlite:////var/lib/x.db", "/var/lib/x.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://", None),
        ("sqlite+aiosqlite:///a%20b.db", "a b.db"),
    ],
)
def test_open_store_sqlite_urls(url: str, path: str | None) -> None:
    store = open_store(url)
    assert store.url.get_backend_name() == "sqlite"
    assert store.url.database == path


def test_open_store_server_urls() -> None:
    for url in ("postgresql://u:s3cret@db:5432/app", "postgres://u:s3cret@db:5432/app"):
        store = open_store(url)
        assert store.url.render_as_string(hide_password=False) == (
            "postgresql+psycopg://u:s3cret@db:5432/app"
        )
        assert "s3cret" not in repr(store)
    assert open_store("postgresql+psycopg://db/app").url.drivername == "postgresql+psycopg"
    assert open_store("mysql://u:pw@db/app").url.drivername == "mysql+asyncmy"
    assert open_store("mariadb://u:pw@db/app").url.drivername == "mariadb+asyncmy"


def test_open_store_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    default = open_store()
    assert default.url.database == "chatkit-demo.db" == DEFAULT_DATABASE_URL.split("///")[1]
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/demo")
    assert open_store().url.get_backend_name() == "postgresql"
    monkeypatch.setenv("DATABASE_URL", "sqlite:///:memory:")
    assert open_store().url.get_backend_name() == "sqlite"


@pytest.mark.parametrize("url", ["oracle://db/app", "sqlite://host/x.db", "x"])
def test_open_store_rejects_unsupported_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


@pytest.mark.asyncio
async def test_sqlite_in_memory_store(alice: DemoContext) -> None:
    async with open_store("sqlite:///:memory:") as store:
        await store.save_thread(thread("thr_mem"), alice)
        await store.add_thread_item("thr_mem", user_message("thr_mem", "m", "kept"), alice)
        assert [i.id for i in await all_items(store, "thr_mem", alice)] == ["m"]


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """Every test leaves no store worker thread behind (all stores are closed)."""
    yield
    workers = [t for t in threading.enumerate() if "_connection_worker" in t.name]
    for worker in workers:
        worker.join(timeout=5)  # a closed connection's worker exits right after close()
    assert not [t for t in workers if t.is_alive()]


def test_pgserver_explains_why_postgres_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import pgserver

    monkeypatch.delenv("CHATKIT_TEST_NO_POSTGRES", raising=False)
    monkeypatch.delenv("CHATKIT_TEST_PG_BINDIR", raising=False)
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(pgserver.PostgresUnavailable, match="apt-get install postgresql"):
        pgserver.find_bindir()
    monkeypatch.setenv("CHATKIT_TEST_NO_POSTGRES", "1")
    with pytest.raises(pgserver.PostgresUnavailable, match="CHATKIT_TEST_NO_POSTGRES"):
        pgserver.find_bindir()
