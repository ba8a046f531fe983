"""A read-only admin: threads per user (with their items inline), items, attachments."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from .models import ChatKitAttachment, ChatKitItem, ChatKitThread


class _ReadOnly:
    """Viewing only: ChatKit owns these rows (the admin's ``view`` permission applies)."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class ItemInline(_ReadOnly, admin.TabularInline):
    model = ChatKitItem
    fields = ("item_id", "kind", "created", "data")
    readonly_fields = fields
    ordering = ("created_at", "seq")
    extra = 0
    show_change_link = True


@admin.register(ChatKitThread)
class ThreadAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ("thread_id", "user_key", "title", "created")
    list_filter = ("user_key",)
    search_fields = ("user_key", "thread_id")
    ordering = ("user_key", "-created_at", "-seq")
    fields = ("user_key", "thread_id", "created", "data")
    readonly_fields = fields
    inlines = (ItemInline,)


@admin.register(ChatKitItem)
class ItemAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ("item_id", "kind", "thread", "created")
    list_filter = ("thread__user_key",)
    search_fields = ("thread__user_key", "thread__thread_id", "item_id")
    ordering = ("thread__user_key", "thread", "created_at", "seq")
    list_select_related = ("thread",)
    fields = ("thread", "item_id", "kind", "created", "data")
    readonly_fields = fields


@admin.register(ChatKitAttachment)
class AttachmentAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ("attachment_id", "user_key")
    list_filter = ("user_key",)
    search_fields = ("user_key", "attachment_id")
    fields = ("user_key", "attachment_id", "data")
    readonly_fields = fields
