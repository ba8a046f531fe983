"""The databases the store suites run against, for ``tests/test_*store*.py``.

``sql_url(request, backend)`` gives a URL for ``sqlite`` (a temporary file; also through
``sqlite-aiosqlite``, SQLAlchemy's async engine on aiosqlite), ``postgres``
(``tests/pgserver.py``) or ``mariadb`` (``tests/mysqlserver.py``). A server that is not
available skips its tests with the reason, except under ``CI=true``, where it fails them:
CI installs both servers, so a skip there would hide a backend. Local opt-outs:
``CHATKIT_TEST_NO_POSTGRES=1``, ``CHATKIT_TEST_NO_MARIADB=1``.

``django_alias(request, backend)`` adds a ``DATABASES`` alias on SQLite or PostgreSQL to
the running Django (settings ``tests.django_settings``, which installs the store app),
migrates the store app there, and returns the alias.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.mysqlserver import mariadb_url  # noqa: F401  (the session fixture)
from tests.pgserver import postgres_url  # noqa: F401  (the session fixture)

SQL_BACKENDS = ("sqlite", "sqlite-aiosqlite", "postgres", "mariadb")
DJANGO_BACKENDS = ("django-sqlite", "django-postgres")
_OPT_OUT = {"postgres": "CHATKIT_TEST_NO_POSTGRES", "mariadb": "CHATKIT_TEST_NO_MARIADB"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(module: str, why: str) -> None:
    """Skip when ``module`` is not installed, except under CI (where it fails: CI installs it)."""
    if in_ci():
        __import__(module)
    else:
        pytest.importorskip(module, reason=why)


def server_url(request: pytest.FixtureRequest, backend: str) -> str:
    """The session server's URL; under CI a missing server fails instead of skipping."""
    fixture = {"postgres": "postgres_url", "mariadb": "mariadb_url"}[backend]
    try:
        url: str = request.getfixturevalue(fixture)
    except pytest.skip.Exception as exc:
        if in_ci() and os.environ.get(_OPT_OUT[backend], "") in ("", "0"):
            pytest.fail(f"CI=true but no {backend} server: {exc}")
        raise
    return url


def sql_url(request: pytest.FixtureRequest, backend: str) -> str:
    """A database URL for ``backend`` (``sqlite`` is a new file in the test's tmp_path)."""
    if backend.startswith("sqlite"):
        tmp_path: Path = request.getfixturevalue("tmp_path")
        driver = "sqlite+aiosqlite" if backend == "sqlite-aiosqlite" else "sqlite"
        return f"{driver}:///{tmp_path / 'chatkit.db'}"
    return server_url(request, backend)


_ALIASES: dict[str, str] = {}


def django_alias(request: pytest.FixtureRequest, backend: str) -> str:
    """A Django database alias for ``django-sqlite`` or ``django-postgres``, migrated."""
    if backend in _ALIASES:
        return _ALIASES[backend]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_settings")
    import django
    from django.apps import apps
    from django.core.management import call_command
    from django.db import connections

    if not apps.ready:
        django.setup()
    assert apps.is_installed("chatkit_adapters.stores.django"), "the store app is not installed"
    alias = f"chatkit_{backend.replace('-', '_')}"
    config: dict[str, Any]
    if backend == "django-sqlite":
        directory: Path = request.getfixturevalue("tmp_path_factory").mktemp("django-store")
        config = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(directory / "chatkit.db"),
            "OPTIONS": {"timeout": 30},
        }
    else:
        url = urlsplit(server_url(request, "postgres"))
        config = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.path.lstrip("/"),
            "USER": unquote(url.username or ""),
            "PASSWORD": unquote(url.password or ""),
            "HOST": url.hostname,
            "PORT": str(url.port),
        }
    configured = connections.configure_settings({"default": connections.settings["default"]})
    configured = connections.configure_settings({**configured, alias: config})
    connections.settings[alias] = configured[alias]
    call_command("migrate", "chatkit_stores", database=alias, verbosity=0)
    _ALIASES[backend] = alias
    return alias


def new_user(name: str = "user") -> str:
    """A user key nobody else has used (the server databases are shared by the session)."""
    return f"{name}-{uuid.uuid4().hex[:10]}"
