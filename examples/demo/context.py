"""The per-request context the demo passes to ``ChatKitServer.process`` and its store."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoContext:
    """Who is asking. Threads, items and attachments are stored per ``user_id``."""

    user_id: str
