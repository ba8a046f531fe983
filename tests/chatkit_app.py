"""The ChatKit server and store every test drives, in-process or behind a real server.

- :class:`ScriptedServer` answers a user message by streaming an assistant message whose
  shape the message text dictates: ``"deltas=200 delay=0.02 idle=3 idle_after=2 size=10"``
  (number of text deltas, seconds between them, an idle pause after ``idle_after`` deltas,
  characters per delta). ``fail_store`` anywhere in the text makes the store refuse to
  save that user message (an exception outside ChatKit's own error handling);
  ``fail_assistant`` makes it refuse the finished assistant message (a store failing
  mid-stream, after the deltas); ``slow_cancel=S`` makes the write of ChatKit's hidden
  "cancelled" marker take S more seconds (a slow store at cancel time); ``cancel_after=N``
  makes the responder itself raise ``CancelledError`` after N deltas, with nobody
  cancelling anything (the responder of ChatKit's own
  ``test_stream_cancellation_persists_pending_assistant_message_and_hidden_context``).
- :class:`JournalStore` keeps everything in memory, really awaits on every write
  (``write_delay``), counts calls, and, when given a path, appends one JSON line per
  completed write so a test can see what a server in another process persisted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chatkit.server import ChatKitServer
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    Attachment,
    Page,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

_PARAM = re.compile(r"(\w+)=([0-9.]+)")


@dataclass
class Script:
    deltas: int = 5
    delay: float = 0.0
    idle: float = 0.0
    idle_after: int = 1
    size: int = 0
    cancel_after: int = -1

    @classmethod
    def parse(cls, text: str) -> Script:
        script = cls()
        for name, value in _PARAM.findall(text):
            if name in ("deltas", "idle_after", "size", "cancel_after"):
                setattr(script, name, int(float(value)))
            elif name in ("delay", "idle"):
                setattr(script, name, float(value))
        return script


def user_text(item: UserMessageItem | None) -> str:
    if item is None:
        return ""
    return " ".join(getattr(part, "text", "") for part in item.content)


class StoreFailure(RuntimeError):
    """Raised by the store when a message asks it to fail."""


@dataclass
class JournalStore(Store[Any]):
    write_delay: float = 0.02
    journal: Path | None = None
    threads: dict[str, ThreadMetadata] = field(default_factory=dict)
    items: dict[str, list[ThreadItem]] = field(default_factory=dict)
    attachments: dict[str, Attachment] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def _write(self, op: str, **record: Any) -> None:
        self.calls.append(op)
        await asyncio.sleep(self.write_delay)  # a real database round trip
        if self.journal is not None:
            line = json.dumps({"t": time.time(), "op": op, **record}, default=str)
            with self.journal.open("a") as fh:
                fh.write(line + "\n")

    def note(self, op: str, **record: Any) -> None:
        """Journal something that is not a store write (e.g. stream progress)."""
        if self.journal is not None:
            line = json.dumps({"t": time.time(), "op": op, **record})
            with self.journal.open("a") as fh:
                fh.write(line + "\n")

    async def load_thread(self, thread_id: str, context: Any) -> ThreadMetadata:
        self.calls.append("load_thread")
        if thread_id not in self.threads:
            raise NotFoundError(f"Thread {thread_id} not found")
        return self.threads[thread_id].model_copy(deep=True)

    async def save_thread(self, thread: ThreadMetadata, context: Any) -> None:
        self.threads[thread.id] = ThreadMetadata.model_validate(thread.model_dump())
        self.items.setdefault(thread.id, [])
        await self._write("save_thread", thread_id=thread.id)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Any
    ) -> Page[ThreadItem]:
        self.calls.append("load_thread_items")
        items = list(self.items.get(thread_id, []))
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [i.id for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return Page(
            data=page,
            has_more=len(items) > limit,
            after=page[-1].id if page and len(items) > limit else None,
        )

    async def save_attachment(self, attachment: Attachment, context: Any) -> None:
        self.attachments[attachment.id] = attachment
        await self._write("save_attachment", attachment_id=attachment.id)

    async def load_attachment(self, attachment_id: str, context: Any) -> Attachment:
        self.calls.append("load_attachment")
        if attachment_id not in self.attachments:
            raise NotFoundError(attachment_id)
        return self.attachments[attachment_id]

    async def delete_attachment(self, attachment_id: str, context: Any) -> None:
        self.attachments.pop(attachment_id, None)
        await self._write("delete_attachment", attachment_id=attachment_id)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Any
    ) -> Page[ThreadMetadata]:
        self.calls.append("load_threads")
        threads = sorted(self.threads.values(), key=lambda t: t.created_at, reverse=order == "desc")
        return Page(data=threads[:limit], has_more=len(threads) > limit)

    def _thread_text(self, thread_id: str) -> str:
        return " ".join(
            user_text(i) for i in self.items.get(thread_id, []) if isinstance(i, UserMessageItem)
        )

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Any) -> None:
        if isinstance(item, UserMessageItem) and "fail_store" in user_text(item):
            self.calls.append("add_thread_item")
            raise StoreFailure("the store refused this message")
        if isinstance(item, AssistantMessageItem) and "fail_assistant" in self._thread_text(
            thread_id
        ):
            self.calls.append("add_thread_item")
            raise StoreFailure("the store refused the assistant message")
        if item.type == "sdk_hidden_context":
            slow = re.search(r"slow_cancel=([0-9.]+)", self._thread_text(thread_id))
            if slow:
                self.note("slow_cancel_write_started", thread_id=thread_id)
                await asyncio.sleep(float(slow.group(1)))
        self.items.setdefault(thread_id, []).append(item)
        await self._write(
            "add_thread_item",
            thread_id=thread_id,
            item_id=item.id,
            item_type=item.type,
            item=item.model_dump(mode="json"),
        )

    async def save_item(self, thread_id: str, item: ThreadItem, context: Any) -> None:
        items = self.items.setdefault(thread_id, [])
        for index, existing in enumerate(items):
            if existing.id == item.id:
                items[index] = item
                break
        else:
            items.append(item)
        await self._write("save_item", thread_id=thread_id, item_id=item.id, item_type=item.type)

    async def load_item(self, thread_id: str, item_id: str, context: Any) -> ThreadItem:
        self.calls.append("load_item")
        for item in self.items.get(thread_id, []):
            if item.id == item_id:
                return item
        raise NotFoundError(item_id)

    async def delete_thread(self, thread_id: str, context: Any) -> None:
        self.threads.pop(thread_id, None)
        self.items.pop(thread_id, None)
        await self._write("delete_thread", thread_id=thread_id)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Any) -> None:
        self.items[thread_id] = [i for i in self.items.get(thread_id, []) if i.id != item_id]
        await self._write("delete_thread_item", thread_id=thread_id, item_id=item_id)


class ScriptedServer(ChatKitServer[Any]):
    """Streams an assistant message as the user's text scripts it (see the module doc)."""

    def __init__(self, store: JournalStore) -> None:
        super().__init__(store)
        self.journal_store = store

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Any
    ) -> AsyncIterator[ThreadStreamEvent]:
        script = Script.parse(user_text(input_user_message))
        # inside ChatKit's try block from here on: a cancel must leave the hidden marker
        self.journal_store.note("respond_started", thread_id=thread.id)
        now = datetime.now()
        item = AssistantMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=now + timedelta(microseconds=1),
            content=[AssistantMessageContent(text="")],
        )
        yield ThreadItemAddedEvent(item=item)
        text = []
        for index in range(script.deltas):
            if index == script.cancel_after:
                raise asyncio.CancelledError()  # by itself: no disconnect, no shutdown
            if index == script.idle_after and script.idle:
                await asyncio.sleep(script.idle)
            # a real respond() always awaits its source (the model's socket); delay=0 still
            # suspends, like a read that finds its data ready
            await asyncio.sleep(script.delay)
            delta = f"w{index} "
            if script.size:
                delta = delta.ljust(script.size, "x")[: max(script.size, len(delta))]
            text.append(delta)
            if index % 50 == 0:
                self.journal_store.note("progress", thread_id=thread.id, produced=index + 1)
            yield ThreadItemUpdatedEvent(
                item_id=item.id,
                update=AssistantMessageContentPartTextDelta(content_index=0, delta=delta),
            )
        item.content = [AssistantMessageContent(text="".join(text))]
        yield ThreadItemDoneEvent(item=item)


def make_server(write_delay: float | None = None, journal: str | None = None) -> ScriptedServer:
    """The server a test app serves; env vars configure it in a server subprocess."""
    if write_delay is None:
        write_delay = float(os.environ.get("CHATKIT_TEST_WRITE_DELAY", "0.02"))
    if journal is None:
        journal = os.environ.get("CHATKIT_TEST_JOURNAL") or None
    return ScriptedServer(
        JournalStore(write_delay=write_delay, journal=Path(journal) if journal else None)
    )


# -- request bodies -------------------------------------------------------------------


def _input(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


def create_thread(text: str = "deltas=3") -> bytes:
    return json.dumps({"type": "threads.create", "params": {"input": _input(text)}}).encode()


def add_message(thread_id: str, text: str = "deltas=3") -> bytes:
    body = {
        "type": "threads.add_user_message",
        "params": {"thread_id": thread_id, "input": _input(text)},
    }
    return json.dumps(body).encode()


def get_thread(thread_id: str) -> bytes:
    return json.dumps({"type": "threads.get_by_id", "params": {"thread_id": thread_id}}).encode()


def list_threads() -> bytes:
    return json.dumps({"type": "threads.list", "params": {}}).encode()


def sse_events(data: bytes) -> list[dict[str, Any]]:
    """The JSON events of an SSE body (comments and blank lines skipped)."""
    events = []
    for block in data.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
    return events


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # the server may be writing a line right now: only complete lines count
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line.strip()]
