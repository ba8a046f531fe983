"""The test harness itself: a broken adapter import fails, a missing framework skips
(fails under ``CI=true``), and the opt-out variables are honoured."""

from __future__ import annotations

import socket
import struct
import sys
import threading

import pytest

from tests import conftest, needs, rawhttp
from tests.http_clients import CLIENTS, framework_of


@pytest.fixture
def broken_client(monkeypatch: pytest.MonkeyPatch) -> str:
    """A client whose framework (``json``) is installed but whose module does not import,
    as when an adapter module has a broken import."""
    monkeypatch.setitem(sys.modules, "tests.http_clients._broken", None)  # import fails
    monkeypatch.setitem(CLIENTS, "json_broken", "tests.http_clients._broken:Client")
    return "json_broken"


def test_a_broken_adapter_import_fails_and_is_never_a_skip(broken_client: str) -> None:
    assert framework_of(broken_client) == "json"
    with pytest.raises(ImportError):
        conftest.load_client(broken_client)


def test_a_missing_framework_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(CLIENTS, "nosuchframework", "tests.http_clients.nosuch:Client")
    monkeypatch.setattr(needs, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="nosuchframework is not installed"):
        conftest.load_client("nosuchframework")
    monkeypatch.setattr(needs, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        conftest.load_client("nosuchframework")


def test_opt_out_variables_skip_even_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(needs, "IN_CI", True)
    monkeypatch.delenv("CHATKIT_TEST_NO_POSTGRES", raising=False)
    with pytest.raises(pytest.fail.Exception, match="CHATKIT_TEST_NO_POSTGRES=1"):
        needs.missing("PostgreSQL not available", "CHATKIT_TEST_NO_POSTGRES")
    monkeypatch.setenv("CHATKIT_TEST_NO_POSTGRES", "1")
    with pytest.raises(pytest.skip.Exception):
        needs.missing("PostgreSQL not available", "CHATKIT_TEST_NO_POSTGRES")


def test_module_of_a_missing_package_is_collected_under_ci_when_selected() -> None:
    assert conftest._selects("flask", "(flask or wsgi) and not reliability")
    assert not conftest._selects("reliability", "(flask or wsgi) and not reliability")
    assert conftest._selects("reliability", "")


# -- the raw HTTP client: a reset or a cut-short body is never a clean end ---------------

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENT = b'data: {"type": "x"}\n\n'
CHUNK = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)


def serve_once(payload: bytes, reset: bool, go: threading.Event) -> tuple[str, int]:
    """A one-shot server: reads the request, sends *payload*, then (once *go* is set, so
    the client has read the head) closes or resets."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        connection, _ = listener.accept()
        with listener, connection:
            connection.recv(65536)
            connection.sendall(payload)
            go.wait(10)
            if reset:  # close with SO_LINGER 0: an RST instead of a FIN
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[:2]


@pytest.mark.parametrize(
    ("payload", "reset", "clean"),
    [
        pytest.param(HEAD + CHUNK + b"0\r\n\r\n", False, True, id="last-chunk"),
        pytest.param(HEAD + CHUNK, False, False, id="eof-without-last-chunk"),
        pytest.param(HEAD + CHUNK, True, False, id="reset"),
    ],
)
def test_raw_client_tells_a_reset_from_a_clean_end(
    payload: bytes, reset: bool, clean: bool
) -> None:
    go = threading.Event()
    stream = rawhttp.open_stream(serve_once(payload, reset, go), b"{}")
    stream.read_head()
    go.set()
    if clean:
        assert [e.data for e in stream.read_all(5)] == [{"type": "x"}]
    else:
        with pytest.raises(AssertionError, match="without its end of body"):
            stream.read_all(5)
        assert stream.reset is reset
    stream.close()
