"""The app config of ``chatkit_adapters.stores.django`` (label ``chatkit_stores``)."""

from __future__ import annotations

from django.apps import AppConfig


class ChatKitStoresConfig(AppConfig):
    name = "chatkit_adapters.stores.django"
    label = "chatkit_stores"
    verbose_name = "ChatKit"
    default_auto_field = "django.db.models.BigAutoField"
