"""The demo ChatKit server shared by every example.

Without ``OPENAI_API_KEY`` it answers with a canned, real-looking reply streamed word by
word (small delays, so streaming and the Stop button are visible). With the key set it
runs an Agents SDK agent (``DEMO_MODEL``, default ``gpt-4.1-mini``) over the thread's
recent items and streams its answer through ``chatkit.agents.stream_agent_response``.

Usage::

    from examples.demo.server import DemoServer
    from examples.demo.store import open_store

    server = DemoServer(open_store())          # SQLStore on DATABASE_URL or sqlite:///chatkit-demo.db
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from datetime import datetime

from chatkit.server import ChatKitServer
from chatkit.store import AttachmentStore, Store
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from .context import DemoContext

WORD_DELAY = float(os.environ.get("DEMO_WORD_DELAY", "0.06"))

_REPLY = (
    "Here is a streamed answer to “{question}”. Each word you see arrives as its own "
    "server-sent event, written to the socket as soon as it is produced, with nothing "
    "buffered by the adapter or the framework. Press Stop while I am talking: the browser "
    "aborts the request, the adapter notices the disconnect, and ChatKit's own cancel "
    "handler saves the part of this message you already saw, plus a hidden marker telling "
    "the next turn that you interrupted me. Reload the page and the partial answer is "
    "still in the thread, stored in {backend}. This demo needs no API key; set "
    "OPENAI_API_KEY to talk to a real model through the Agents SDK instead."
)


def _text(item: UserMessageItem | None) -> str:
    if item is None:
        return ""
    return " ".join(getattr(part, "text", "") for part in item.content).strip()


class DemoServer(ChatKitServer[DemoContext]):
    """Streams a canned reply word by word, or an Agents SDK run when a key is set."""

    def __init__(
        self,
        store: Store[DemoContext],
        word_delay: float = WORD_DELAY,
        attachment_store: AttachmentStore[DemoContext] | None = None,
    ) -> None:
        if attachment_store is None:  # files in ATTACHMENTS_URL (default ./chatkit-demo-files)
            from chatkit_adapters.attachments import Attachments

            location = os.environ.get("ATTACHMENTS_URL", "chatkit-demo-files")
            attachment_store = Attachments(
                location, allowed_types=["image/*", "text/*", "application/pdf"]
            )
        super().__init__(store, attachment_store=attachment_store)
        self.word_delay = word_delay

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: DemoContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        if thread.title is None and input_user_message is not None:
            thread.title = _text(input_user_message)[:60] or "New chat"
        if os.environ.get("OPENAI_API_KEY"):
            async for event in self._agent(thread, context):
                yield event
            return
        async for event in self._canned(thread, input_user_message, context):
            yield event

    async def _canned(
        self, thread: ThreadMetadata, message: UserMessageItem | None, context: DemoContext
    ) -> AsyncIterator[ThreadStreamEvent]:
        question = _text(message)[:80] or "your message"
        url = getattr(self.store, "url", None)  # SQLStore: name the database it uses
        backend = url.get_backend_name() if url is not None else type(self.store).__name__
        words = _REPLY.format(question=question, backend=backend).split(" ")
        item = AssistantMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=[AssistantMessageContent(text="")],
        )
        yield ThreadItemAddedEvent(item=item)
        text = ""
        for index, word in enumerate(words):
            await asyncio.sleep(self.word_delay * random.uniform(0.5, 1.5))
            delta = word if index == 0 else " " + word
            text += delta
            yield ThreadItemUpdatedEvent(
                item_id=item.id,
                update=AssistantMessageContentPartTextDelta(content_index=0, delta=delta),
            )
        item.content = [AssistantMessageContent(text=text)]
        yield ThreadItemDoneEvent(item=item)

    async def _agent(
        self, thread: ThreadMetadata, context: DemoContext
    ) -> AsyncIterator[ThreadStreamEvent]:  # pragma: no cover - needs a key and the network
        from agents import Agent, Runner
        from chatkit.agents import AgentContext, simple_to_agent_input, stream_agent_response

        page = await self.store.load_thread_items(thread.id, None, 20, "desc", context)
        items = list(reversed(page.data))
        agent = Agent(
            name="Assistant",
            instructions="You are a concise, friendly assistant.",
            model=os.environ.get("DEMO_MODEL", "gpt-4.1-mini"),
        )
        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)
        result = Runner.run_streamed(
            agent, await simple_to_agent_input(items), context=agent_context
        )
        async for event in stream_agent_response(agent_context, result):
            yield event
