"""Flask specifics the conformance suite does not look at: registration, ``g`` in the
context factory, request hooks on a stream that stays incremental."""

from __future__ import annotations

import threading
import time
from typing import Any

import flask
import pytest

from chatkit_adapters.flask import chatkit_response, chatkit_view
from tests.chatkit_app import ScriptedServer, create_thread, make_server, sse_events

pytestmark = pytest.mark.flask


@pytest.fixture
def server() -> ScriptedServer:
    return make_server(write_delay=0.001, journal="")


def test_view_registers_without_endpoint(server: ScriptedServer) -> None:
    view = chatkit_view(server)
    assert view.__name__ == "chatkit"
    app = flask.Flask(__name__)
    app.add_url_rule("/chatkit", view_func=view, methods=["POST"])
    assert app.url_map.bind("localhost").match("/chatkit", method="POST") == ("chatkit", {})


def test_context_factory_sees_g_and_hooks_see_the_stream(server: ScriptedServer) -> None:
    app = flask.Flask(__name__)
    seen: list[Any] = []

    @app.before_request
    def login() -> None:
        flask.g.user = "alice"

    def context(request: Any) -> dict[str, Any]:
        seen.append((request is flask.request, flask.g.user, request.headers.get("x-id")))
        return {"user": flask.g.user}

    closed: list[str] = []

    @app.after_request
    def mark(response: Any) -> Any:
        response.headers["x-after"] = "1"
        response.call_on_close(lambda: closed.append("closed"))
        return response

    app.add_url_rule("/chatkit", view_func=chatkit_view(server, context), methods=["POST"])
    client = app.test_client()
    # the answer sleeps 30 s after its third delta: those three must arrive before that
    script = "deltas=5 idle=30 idle_after=3"
    response = client.post(
        "/chatkit", data=create_thread(script), headers={"x-id": "7"}, buffered=False
    )
    received = b""
    try:
        assert response.status_code == 200
        assert response.headers["x-after"] == "1"
        assert response.headers["content-type"] == "text/event-stream"
        assert "content-length" not in response.headers
        for chunk in response.response:  # type: ignore[attr-defined]
            received += chunk
            if received.count(b"thread.item.updated") >= 3:
                break  # incremental: three deltas while the answer sleeps
    finally:
        response.close()  # the client leaves: the stream is cancelled
    assert seen == [(True, "alice", "7")]
    assert closed == ["closed"]
    events = sse_events(received)
    updates = [e["update"]["delta"] for e in events if e["type"] == "thread.item.updated"]
    assert updates == ["w0 ", "w1 ", "w2 "]


def test_chatkit_response_in_a_user_route(server: ScriptedServer) -> None:
    app = flask.Flask(__name__)

    @app.post("/chatkit")
    def chatkit() -> Any:
        if flask.request.headers.get("authorization") != "Bearer ok":
            flask.abort(401)
        return chatkit_response(server, flask.request, {"user": "bob"}, heartbeat=5.0)

    client = app.test_client()
    assert client.post("/chatkit", data=create_thread()).status_code == 401
    response = client.post(
        "/chatkit", data=create_thread("deltas=2"), headers={"authorization": "Bearer ok"}
    )
    assert response.status_code == 200
    assert sse_events(response.data)[-1]["type"] == "thread.item.done"


def test_stream_replaced_by_a_hook_is_cancelled_and_saved(server: ScriptedServer) -> None:
    """An ``after_request`` hook swaps the streaming response for its own: the stream is
    never iterated nor closed, and ChatKit's cancel cleanup still runs and persists."""
    app = flask.Flask(__name__)
    responding = threading.Event()
    server.journal_store.note = (  # type: ignore[method-assign]
        lambda op, **record: responding.set() if op == "progress" else None
    )

    @app.after_request
    def replace(response: Any) -> Any:
        # the stream runs ahead into the answer meanwhile: wait for its first delta
        assert responding.wait(10)
        return flask.Response("replaced", status=503)

    app.add_url_rule("/chatkit", view_func=chatkit_view(server), methods=["POST"])
    response = app.test_client().post("/chatkit", data=create_thread("deltas=100 delay=0.01"))
    assert (response.status_code, response.data) == (503, b"replaced")
    (thread_id,) = server.journal_store.threads
    deadline = time.monotonic() + 5
    kinds: list[str] = []
    while time.monotonic() < deadline:
        kinds = [item.type for item in server.journal_store.items[thread_id]]
        if "sdk_hidden_context" in kinds:
            break
        time.sleep(0.01)
    assert kinds == ["user_message", "assistant_message", "sdk_hidden_context"]
