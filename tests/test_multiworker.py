"""Beyond one machine: several worker processes share one PostgreSQL database, and a thread
created through one worker is continued through another (no per-process state)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chatkit_app import add_message, create_thread, get_thread, sse_events
from tests.needs import require_package
from tests.rawhttp import request
from tests.realserver import ROOT, free_port, serving

pytestmark = [pytest.mark.store, pytest.mark.realserver]

DEPLOYMENTS = {
    "uvicorn-workers": lambda port: [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.multiworker_apps:asgi",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ],
    "gunicorn-gthread-workers": lambda port: [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        "2",
        "-k",
        "gthread",
        "--threads",
        "4",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "tests.multiworker_apps:wsgi()",
    ],
}
NEEDS = {"uvicorn-workers": "starlette", "gunicorn-gthread-workers": "flask"}


@pytest.fixture(params=list(DEPLOYMENTS))
def deployment(
    request: pytest.FixtureRequest,
    postgres_url: str,
    tmp_path: Path,
) -> Iterator[tuple[str, int]]:
    name = request.param
    require_package(NEEDS[name])
    require_package("psycopg")
    assert (ROOT / "examples" / f"{NEEDS[name]}_app.py").exists()
    port = free_port()
    pids: set[str] = set()

    def both_workers_answer() -> bool:
        pids.add(request_pid(port, get_thread("thr_none"))[0])
        return len(pids) == 2

    env = {"DATABASE_URL": postgres_url, "DEMO_WORD_DELAY": "0.001"}
    argv = DEPLOYMENTS[name](port)
    with serving(argv, tmp_path / "server.log", both_workers_answer, env):
        yield name, port


def request_pid(port: int, body: bytes, user: str = "alice") -> tuple[str, bytes, int]:
    stream = request(("127.0.0.1", port), body, headers={"X-User-Id": user})
    return stream.headers["x-worker-pid"], stream._body, stream.status


def test_thread_created_by_one_worker_continues_on_another(
    deployment: tuple[str, int],
) -> None:
    _, port = deployment
    creator, body, status = request_pid(port, create_thread("first question"))
    assert status == 200
    thread_id = sse_events(body)[0]["thread"]["id"]
    deadline = time.monotonic() + 30
    while True:  # new connections until another worker answers
        assert time.monotonic() < deadline, "only one worker ever answered"
        other, body, status = request_pid(port, add_message(thread_id, "second question"))
        assert status == 200, body[:300]
        if other != creator:
            break
    assert sse_events(body)[-1]["type"] == "thread.item.done"
    texts = []
    for _ in range(6):  # whichever worker answers sees the same thread
        _, body, status = request_pid(port, get_thread(thread_id))
        assert status == 200
        items = json.loads(body)["items"]["data"]
        texts.append([item["type"] for item in items])
    assert all(t == texts[0] for t in texts)
    assert texts[0].count("user_message") >= 2 and texts[0].count("assistant_message") >= 2
    # another user sees nothing of it
    _, _, status = request_pid(port, get_thread(thread_id), user="mallory")
    assert status == 404
