"""DjangoStore: ChatKit's store contract on SQLite and PostgreSQL (the demo's contract suite
runs on it too, in tests/test_store_contract.py), its user keys, and the Django example
project on real ASGI and WSGI servers: threads stored per signed-in ``request.user``,
listed read-only in the admin."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatkit.store import NotFoundError, Store

from tests.chatkit_store_contract import Context, StoreContract, metadata
from tests.mysqlserver import mariadb_url  # noqa: F401  (a session fixture)
from tests.pgserver import postgres_url  # noqa: F401  (a session fixture)
from tests.realserver import answers_http, free_port, serving
from tests.storedb import DJANGO_BACKENDS, django_alias, need, new_user

pytestmark = pytest.mark.store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=DJANGO_BACKENDS)
def alias(request: pytest.FixtureRequest) -> str:
    """A migrated Django database alias (sync: Django migrates outside the event loop)."""
    need("django", "DjangoStore needs django")
    return django_alias(request, str(request.param))


class TestDjangoStoreContract(StoreContract):
    @pytest.fixture
    def backend(self, alias: str) -> str:
        return alias

    async def make_store(self, backend: str, request: pytest.FixtureRequest) -> Store[Any]:
        from chatkit_adapters.stores.django import DjangoStore

        return DjangoStore(using=backend)


@dataclass
class UserContext:
    """A context carrying a Django user, as a context factory may build it."""

    user: Any


async def test_user_keys_from_a_django_user(alias: str) -> None:
    from django.contrib.auth.models import AnonymousUser, User

    from chatkit_adapters.stores.django import DjangoStore
    from chatkit_adapters.stores.django.store import django_user_id

    store: DjangoStore[Any] = DjangoStore(using=alias)
    member = User(pk=4242, username=new_user())  # never saved: only its pk is read
    assert django_user_id(UserContext(member)) == "4242"
    assert django_user_id({"user_id": 7}) == "7"  # a user_id wins, like SQLStore's default
    with pytest.raises(PermissionError):
        django_user_id(UserContext(AnonymousUser()))
    with pytest.raises(TypeError, match="user_id"):
        django_user_id(object())

    owner = UserContext(User(pk=int(uuid.uuid4().int % 10**9), username="u"))
    await store.save_thread(metadata("thr_user"), owner)
    assert (await store.load_thread("thr_user", Context(django_user_id(owner)))).id == "thr_user"
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_user", UserContext(member))

    teams: DjangoStore[Any] = DjangoStore(using=alias, user_id=lambda ctx: f"team-{ctx['team']}")
    await teams.save_thread(metadata("thr_team"), {"team": owner.user.pk})
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_team", owner)  # the team's key, not the user's
    assert (await teams.load_thread("thr_team", {"team": owner.user.pk})).id == "thr_team"


# --------------------------------------------------------------------------------------
# The example project on real servers, signed-in users
# --------------------------------------------------------------------------------------

SETUP = textwrap.dedent(
    """
    import json, os
    os.environ["DJANGO_SETTINGS_MODULE"] = "examples.django_project.settings"
    import django
    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    sessions = {}
    for name, admin in (("ada", True), ("bob", False)):
        user = User.objects.create_user(name, password="pw", is_staff=admin, is_superuser=admin)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        sessions[name] = {"session": session.session_key, "pk": user.pk}
    print(json.dumps(sessions))
    """
)

SERVERS = {
    "asgi-uvicorn": ["-m", "uvicorn", "examples.django_project.asgi:application", "--port"],
    "wsgi-gunicorn": [
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "--threads",
        "8",
        "examples.django_project.wsgi:application",
        "--bind",
    ],
}


def create_thread(text: str) -> bytes:
    return json.dumps(
        {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": text}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
        }
    ).encode()


def request(kind: str, **params: Any) -> bytes:
    return json.dumps({"type": kind, "params": params}).encode()


@pytest.fixture(params=list(SERVERS))
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The example project serving on a fresh SQLite database; (base URL, users)."""
    server = str(request.param)
    need("django", "the Django example needs django")
    if server == "wsgi-gunicorn":
        need("gunicorn", "gunicorn is not installed")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'django.db'}",
        "DEMO_WORD_DELAY": "0",
        "DJANGO_SETTINGS_MODULE": "examples.django_project.settings",
        "PYTHONPATH": str(ROOT),
    }
    import os

    setup = subprocess.run(
        [sys.executable, "-c", SETUP],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=120,
    )
    assert setup.returncode == 0, setup.stderr
    users = json.loads(setup.stdout)
    port = free_port()
    address = f"127.0.0.1:{port}" if server == "wsgi-gunicorn" else str(port)
    argv = [sys.executable, *SERVERS[server], address]
    with serving(argv, tmp_path / "server.log", answers_http(("127.0.0.1", port)), env):
        yield f"http://127.0.0.1:{port}", users


def test_example_stores_threads_per_signed_in_user(example: tuple[str, dict[str, Any]]) -> None:
    base, users = example
    ada = httpx.Client(base_url=base, cookies={"sessionid": users["ada"]["session"]}, timeout=30)
    bob = httpx.Client(base_url=base, cookies={"sessionid": users["bob"]["session"]}, timeout=30)
    guest = httpx.Client(base_url=base, headers={"x-user-id": str(users["ada"]["pk"])})
    with ada, bob, guest:
        created = ada.post("/chatkit", content=create_thread("hello from ada"))
        assert created.status_code == 200, created.text
        events = [
            json.loads(line[len("data: ") :])
            for line in created.text.splitlines()
            if line.startswith("data: ")
        ]
        assert events[-1]["type"] == "thread.item.done"
        thread_id = events[0]["thread"]["id"]

        got = ada.post("/chatkit", content=request("threads.get_by_id", thread_id=thread_id))
        assert got.status_code == 200
        assert [i["type"] for i in got.json()["items"]["data"]] == [
            "user_message",
            "assistant_message",
        ]
        # Another signed-in user, and a guest claiming ada's pk, see nothing of it.
        for other in (bob, guest):
            denied = other.post(
                "/chatkit", content=request("threads.get_by_id", thread_id=thread_id)
            )
            assert denied.status_code == 404
            listed = other.post("/chatkit", content=request("threads.list"))
            assert listed.json()["data"] == []
        assert [
            t["id"] for t in ada.post("/chatkit", content=request("threads.list")).json()["data"]
        ] == [thread_id]

        # The admin lists it under ada's pk, read-only; bob (not staff) may not look.
        changelist = ada.get("/admin/chatkit_stores/chatkitthread/")
        assert changelist.status_code == 200
        assert thread_id in changelist.text and "hello from ada" in changelist.text
        filtered = ada.get(
            "/admin/chatkit_stores/chatkitthread/", params={"user_key": str(users["bob"]["pk"])}
        )
        assert thread_id not in filtered.text
        items = ada.get("/admin/chatkit_stores/chatkititem/")
        assert items.status_code == 200 and "assistant_message" in items.text
        assert ada.get("/admin/chatkit_stores/chatkitthread/add/").status_code == 403
        assert bob.get("/admin/chatkit_stores/chatkitthread/").status_code == 302  # to login
