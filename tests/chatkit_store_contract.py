"""ChatKit's own store contract, as an abstract suite each store subclasses.

openai/chatkit-python tests its stores with an abstract ``TestStore`` class in its
``tests/test_store.py`` (Apache-2.0). That file could not be copied into this repository,
so this is an independent equivalent written from ``chatkit.store.Store``'s contract: it
checks every behaviour that class checks (thread metadata round trip and update, a null
title, items in order with attachments and nested widgets, file and image attachments,
thread pages, item order and ``after`` cursors, ``save_item`` updates, a missing item,
isolation of threads and items between users, default and overridden id generators).

A subclass sets ``store`` in its ``open_store`` fixture (any backend) and names itself
``Test...``. Each test uses fresh user keys, so a shared database needs no cleaning.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    FileAttachment,
    ImageAttachment,
    InferenceOptions,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
    WidgetItem,
)
from chatkit.widgets import Card, Col, Text
from pydantic import AnyUrl


@dataclass(frozen=True)
class Context:
    """A request context with a user, like ChatKit's own tests pass."""

    user_id: str


def fresh_context(name: str) -> Context:
    return Context(user_id=f"{name}-{uuid.uuid4().hex[:10]}")


def metadata(thread_id: str = "thr_contract", at: datetime | None = None) -> ThreadMetadata:
    return ThreadMetadata(
        id=thread_id,
        title="A thread",
        created_at=at or datetime.now(),
        metadata={"origin": "contract", "n": 1},
    )


def message(thread_id: str, item_id: str, text: str, at: datetime) -> UserMessageItem:
    return UserMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=at,
        content=[UserMessageTextContent(text=text)],
        attachments=[],
        inference_options=InferenceOptions(),
    )


def conversation(thread_id: str) -> list[ThreadItem]:
    """A user message with an attachment, an answer, and a widget with nested layout."""
    start = datetime.now()
    return [
        UserMessageItem(
            id="msg_9_user",  # ids deliberately not in time order
            thread_id=thread_id,
            created_at=start,
            content=[UserMessageTextContent(text="Hello?")],
            attachments=[
                FileAttachment(
                    id="atc_notes",
                    mime_type="text/plain",
                    name="notes.txt",
                    metadata={"kind": "notes"},
                )
            ],
            inference_options=InferenceOptions(),
        ),
        AssistantMessageItem(
            id="msg_1_assistant",
            thread_id=thread_id,
            created_at=start + timedelta(seconds=1),
            content=[AssistantMessageContent(text="Hello!")],
        ),
        WidgetItem(
            id="wid_5",
            thread_id=thread_id,
            created_at=start + timedelta(seconds=2),
            widget=Card(
                children=[
                    Col(
                        padding={"x": 2, "y": 1},
                        children=[Text(value="Heading", weight="semibold"), Text(value="body")],
                    )
                ]
            ),
        ),
    ]


class StoreContract(ABC):
    """The contract of ``chatkit.store.Store``; subclass it per store.

    A subclass defines a ``backend`` fixture (parametrized over its databases) and
    :meth:`make_store`; the store is closed (``aclose``, if it has one) after each test.
    """

    store: Store[Any]

    @abstractmethod
    async def make_store(self, backend: str, request: pytest.FixtureRequest) -> Store[Any]:
        """A store on ``backend`` for one test."""

    @pytest.fixture(autouse=True)
    async def _store(self, backend: str, request: pytest.FixtureRequest) -> AsyncIterator[None]:
        self.store = await self.make_store(backend, request)
        yield
        close = getattr(self.store, "aclose", None)
        if close is not None:
            await close()

    @pytest.fixture(autouse=True)
    def _users(self) -> None:
        self.user = fresh_context("user")
        self.other = fresh_context("other")

    async def test_thread_metadata_round_trip(self) -> None:
        thread = metadata()
        await self.store.save_thread(thread, self.user)
        loaded = await self.store.load_thread(thread.id, self.user)
        assert (loaded.id, loaded.title, loaded.metadata) == (
            thread.id,
            thread.title,
            thread.metadata,
        )
        assert loaded == thread

    async def test_thread_without_a_title(self) -> None:
        thread = metadata().model_copy(update={"title": None})
        await self.store.save_thread(thread, self.user)
        loaded = await self.store.load_thread(thread.id, self.user)
        assert loaded.title is None
        assert loaded.metadata == thread.metadata

    async def test_saving_a_thread_again_updates_it(self) -> None:
        thread = metadata()
        await self.store.save_thread(thread, self.user)
        thread.title = "Renamed"
        thread.metadata["n"] = 2
        await self.store.save_thread(thread, self.user)
        loaded = await self.store.load_thread(thread.id, self.user)
        assert (loaded.title, loaded.metadata["n"]) == ("Renamed", 2)
        page = await self.store.load_threads(10, None, "asc", self.user)
        assert [t.id for t in page.data] == [thread.id]

    async def test_items_come_back_equal_and_in_order(self) -> None:
        thread = metadata()
        await self.store.save_thread(thread, self.user)
        items = conversation(thread.id)
        for item in items:
            await self.store.add_thread_item(thread.id, item, self.user)
        page = await self.store.load_thread_items(thread.id, None, 10, "asc", self.user)
        assert page.data == items
        assert (page.has_more, page.after) == (False, None)

    async def test_file_attachment_round_trip(self) -> None:
        document = FileAttachment(id="atc_file", mime_type="text/plain", name="a.txt")
        await self.store.save_attachment(document, self.user)
        assert await self.store.load_attachment(document.id, self.user) == document

    async def test_image_attachment_round_trip(self) -> None:
        image = ImageAttachment(
            id="atc_image",
            mime_type="image/png",
            name="a.png",
            preview_url=AnyUrl("https://example.com/a.png"),
            metadata={"width": 10},
        )
        await self.store.save_attachment(image, self.user)
        loaded = await self.store.load_attachment(image.id, self.user)
        assert isinstance(loaded, ImageAttachment)
        assert loaded == image

    async def test_thread_pages(self) -> None:
        start = datetime.now()
        for n in (2, 0, 1):  # saved out of order: created_at decides
            thread = metadata(f"thr_{n}", start + timedelta(seconds=n))
            await self.store.save_thread(thread, self.user)
        first = await self.store.load_threads(limit=2, after=None, order="asc", context=self.user)
        assert [t.id for t in first.data] == ["thr_0", "thr_1"]
        assert (first.has_more, first.after) == (True, "thr_1")
        second = await self.store.load_threads(2, first.after, "asc", self.user)
        assert [t.id for t in second.data] == ["thr_2"]
        assert (second.has_more, second.after) == (False, None)
        newest = await self.store.load_threads(1, None, "desc", self.user)
        assert [t.id for t in newest.data] == ["thr_2"] and newest.has_more

    async def test_item_order_both_ways(self) -> None:
        thread = metadata()
        await self.store.save_thread(thread, self.user)
        start = datetime.now()
        for n in range(3):
            item = message(thread.id, f"msg{n}", str(n), start + timedelta(seconds=n))
            await self.store.add_thread_item(thread.id, item, self.user)
        asc = await self.store.load_thread_items(thread.id, None, 3, "asc", self.user)
        desc = await self.store.load_thread_items(thread.id, None, 3, "desc", self.user)
        assert [i.id for i in asc.data] == ["msg0", "msg1", "msg2"]
        assert [i.id for i in desc.data] == ["msg2", "msg1", "msg0"]

    async def test_item_cursor_and_limit(self) -> None:
        thread = metadata()
        await self.store.save_thread(thread, self.user)
        start = datetime.now()
        for n in range(5):
            item = message(thread.id, f"msg{n}", str(n), start + timedelta(seconds=n))
            await self.store.add_thread_item(thread.id, item, self.user)
        rest = await self.store.load_thread_items(thread.id, "msg1", 3, "asc", self.user)
        assert [i.id for i in rest.data] == ["msg2", "msg3", "msg4"]
        assert (rest.has_more, rest.after) == (False, None)
        head = await self.store.load_thread_items(thread.id, None, 2, "asc", self.user)
        assert [i.id for i in head.data] == ["msg0", "msg1"]
        assert (head.has_more, head.after) == (True, "msg1")
        back = await self.store.load_thread_items(thread.id, "msg3", 2, "desc", self.user)
        assert [i.id for i in back.data] == ["msg2", "msg1"]
        assert (back.has_more, back.after) == (True, "msg1")

    async def test_save_item_updates_an_item(self) -> None:
        thread = metadata()
        await self.store.save_thread(thread, self.user)
        answer, widget = conversation(thread.id)[1:]
        assert isinstance(answer, AssistantMessageItem)
        await self.store.add_thread_item(thread.id, answer, self.user)
        await self.store.add_thread_item(thread.id, widget, self.user)
        answer.content = [AssistantMessageContent(text="A longer answer.")]
        await self.store.save_item(thread.id, answer, self.user)
        loaded = await self.store.load_item(thread.id, answer.id, self.user)
        assert isinstance(loaded, AssistantMessageItem)
        assert loaded.content == [AssistantMessageContent(text="A longer answer.")]
        await self.store.save_item(thread.id, widget, self.user)
        assert isinstance(await self.store.load_item(thread.id, widget.id, self.user), WidgetItem)
        page = await self.store.load_thread_items(thread.id, None, 10, "asc", self.user)
        assert [i.id for i in page.data] == [answer.id, widget.id]

    async def test_missing_item(self) -> None:
        thread = metadata()
        await self.store.save_thread(thread, self.user)
        with pytest.raises(NotFoundError):
            await self.store.load_item(thread.id, "msg_missing", self.user)

    async def test_threads_are_per_user(self) -> None:
        thread = metadata("thr_mine")
        await self.store.save_thread(thread, self.user)
        assert (await self.store.load_thread(thread.id, self.user)).title == thread.title
        with pytest.raises(NotFoundError):
            await self.store.load_thread(thread.id, self.other)
        assert (await self.store.load_threads(10, None, "asc", self.other)).data == []

    async def test_items_are_per_user(self) -> None:
        thread = metadata("thr_shared_id")
        await self.store.save_thread(thread, self.user)
        items = conversation(thread.id)
        for item in items:
            await self.store.add_thread_item(thread.id, item, self.user)
        mine = await self.store.load_thread_items(thread.id, None, 10, "asc", self.user)
        assert mine.data == items
        theirs = await self.store.load_thread_items(thread.id, None, 10, "asc", self.other)
        assert theirs.data == []
        with pytest.raises(NotFoundError):
            await self.store.load_item(thread.id, items[0].id, self.other)

    async def test_default_id_prefixes(self) -> None:
        thread_id = self.store.generate_thread_id(self.user)
        assert thread_id.startswith("thr_")
        thread = metadata(thread_id)
        prefixes = {"message": "msg_", "tool_call": "tc_", "task": "tsk_", "workflow": "wf_"}
        for kind, prefix in prefixes.items():
            assert self.store.generate_item_id(kind, thread, self.user).startswith(prefix)  # type: ignore[arg-type]
        assert self.store.generate_thread_id(self.user) != thread_id

    async def test_overridden_id_generators_are_used(self) -> None:
        base = type(self.store)

        class Numbered(base):  # type: ignore[misc,valid-type]
            counter = 0

            def generate_thread_id(self, context: Any) -> str:
                Numbered.counter += 1
                return f"thr_n{Numbered.counter}"

            def generate_item_id(self, item_type: Any, thread: Any, context: Any) -> str:
                Numbered.counter += 1
                return f"{item_type}_n{Numbered.counter}_{thread.id}"

        store: Any = Numbered.__new__(Numbered)
        store.__dict__.update(self.store.__dict__)  # the same backend, the subclass's ids
        thread = metadata(store.generate_thread_id(self.user))
        assert thread.id == "thr_n1"
        assert store.generate_item_id("message", thread, self.user) == "message_n2_thr_n1"
        await store.save_thread(thread, self.user)
        item = message(
            thread.id, store.generate_item_id("task", thread, self.user), "x", datetime.now()
        )
        await store.add_thread_item(thread.id, item, self.user)
        assert (await self.store.load_item(thread.id, "task_n3_thr_n1", self.user)) == item
        close = getattr(store, "aclose", None)
        if close is not None:  # the copy may have opened connections of its own
            await close()
