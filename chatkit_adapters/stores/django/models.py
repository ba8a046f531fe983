"""ChatKit threads, items and attachments as Django models (JSON documents plus keys).

Every row carries ``user_key``, the string the store's ``user_id`` option derives from a
request context. Ordering is ``created_at`` (microseconds since the epoch, UTC) then
``seq`` (insertion order).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from django.db import models


class DocumentField(models.JSONField):
    """A ``JSONField`` stored as PostgreSQL ``json``, not ``jsonb``.

    ``jsonb`` refuses the ``\\u0000`` escape that ChatKit text may contain, and reorders
    keys; the store never queries inside the document, so nothing is lost.
    """

    def db_type(self, connection: Any) -> Any:
        if connection.vendor == "postgresql":
            return "json"
        return super().db_type(connection)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if connection.vendor == "postgresql" and value is not None and not prepared:
            return json.dumps(value, cls=self.encoder)  # JSON text: Django would send jsonb
        return super().get_db_prep_value(value, connection, prepared)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or isinstance(value, (str, bytes)):
            return super().from_db_value(value, expression, connection)
        return value  # psycopg 3 parses json columns itself


def _moment(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)


class ChatKitThread(models.Model):
    seq = models.BigAutoField(primary_key=True)
    user_key = models.CharField(max_length=255)
    thread_id = models.CharField(max_length=255)
    created_at = models.BigIntegerField(help_text="microseconds since the epoch, UTC")
    data = DocumentField(help_text="ThreadMetadata")

    class Meta:
        verbose_name = "thread"
        constraints = [
            models.UniqueConstraint(fields=["user_key", "thread_id"], name="chatkit_thread_key")
        ]
        indexes = [
            models.Index(fields=["user_key", "created_at", "seq"], name="chatkit_thread_time")
        ]

    def __str__(self) -> str:
        return f"{self.thread_id} ({self.user_key})"

    @property
    def created(self) -> datetime:
        return _moment(self.created_at)

    @property
    def title(self) -> str:
        data: Any = self.data
        return str(data.get("title") or "") if isinstance(data, dict) else ""


class ChatKitItem(models.Model):
    seq = models.BigAutoField(primary_key=True)
    thread = models.ForeignKey(ChatKitThread, on_delete=models.CASCADE, related_name="items")
    item_id = models.CharField(max_length=255)
    created_at = models.BigIntegerField(help_text="microseconds since the epoch, UTC")
    data = DocumentField(help_text="ThreadItem")

    class Meta:
        verbose_name = "item"
        constraints = [
            models.UniqueConstraint(fields=["thread", "item_id"], name="chatkit_item_key")
        ]
        indexes = [models.Index(fields=["thread", "created_at", "seq"], name="chatkit_item_time")]

    def __str__(self) -> str:
        return str(self.item_id)

    @property
    def created(self) -> datetime:
        return _moment(self.created_at)

    @property
    def kind(self) -> str:
        data: Any = self.data
        return str(data.get("type") or "") if isinstance(data, dict) else ""


class ChatKitAttachment(models.Model):
    seq = models.BigAutoField(primary_key=True)
    user_key = models.CharField(max_length=255)
    attachment_id = models.CharField(max_length=255)
    data = DocumentField(help_text="Attachment")

    class Meta:
        verbose_name = "attachment"
        constraints = [
            models.UniqueConstraint(
                fields=["user_key", "attachment_id"], name="chatkit_attachment_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.attachment_id} ({self.user_key})"
