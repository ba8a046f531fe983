"""Property-based fuzzing of every adapter's request path with malformed requests.

Each adapter (its one-line ``chatkit_view``, driven in-process by the framework's own
transport) gets at least ``BODIES_PER_ADAPTER`` generated malformed requests: truncated and
invalid JSON, wrong types, unknown request types, huge strings, deep nesting, invalid UTF-8,
invalid base64, oversized bodies (with and without ``Content-Length``, under a small
``max_body_size``) and wrong methods. Every answer must be a 4xx carrying the documented
JSON error, short, with no traceback and no raw markup from the request, and the store must
be untouched. Lying or malformed ``Content-Length`` headers, which in-process transports
rewrite, are sent over a raw socket to each adapter's first real server.

Hypothesis runs derandomized (the same examples on every run), so CI is reproducible.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("hypothesis", reason="the fuzz suite needs hypothesis (tox -e reliability)")

from chatkit.types import ChatKitReq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from tests.chatkit_app import add_message, create_thread, get_thread, list_threads, make_server
from tests.conftest import MEASUREMENTS, load_client
from tests.http_clients import CLIENTS
from tests.http_clients.base import HttpClient, Response
from tests.rawhttp import parse_response
from tests.realserver import (
    SHARED_OPTIONS,
    all_real_targets,
    prestart_shared,
    real_server_params,
    shared_server,
)

pytestmark = pytest.mark.reliability

BODIES_PER_ADAPTER = 1000
MAX_BODY_SIZE = 16 * 1024  # small enough that "oversized" stays cheap
MAX_MESSAGE = 300
MARKUP = "<script>alert(1)</script>"

_REQUEST = TypeAdapter(ChatKitReq)

REQUEST_TYPES = [
    "threads.create",
    "threads.add_user_message",
    "threads.add_client_tool_output",
    "threads.retry_after_item",
    "threads.custom_action",
    "threads.sync_custom_action",
    "threads.get_by_id",
    "threads.list",
    "threads.update",
    "threads.delete",
    "items.list",
    "items.feedback",
    "attachments.create",
    "attachments.delete",
    "input.transcribe",
]

# kinds whose generator may, by chance, produce a valid request (skipped when it does);
# the others are malformed by construction (bad_base64 passes pydantic, on purpose)
ACCIDENTALLY_VALID = {"wrong_shape", "invalid_utf8"}

VALID_BODIES = [
    create_thread("deltas=3"),
    add_message("thr_1", "hello"),
    get_thread("thr_1"),
    list_threads(),
    json.dumps(
        {"type": "input.transcribe", "params": {"audio_base64": "AAAA", "mime_type": "audio/webm"}}
    ).encode(),
]


class Case:
    """One generated request; *chunked*: sent without Content-Length (an async iterator
    body); *expect*: the exact status expected, else any documented 4xx."""

    __slots__ = ("body", "chunked", "expect", "kind", "method")

    def __init__(
        self, kind: str, method: str, body: bytes, chunked: bool = False, expect: int | None = None
    ) -> None:
        self.kind, self.method, self.body = kind, method, body
        self.chunked, self.expect = chunked, expect

    def __repr__(self) -> str:  # keep hypothesis' failure reports short
        return f"Case({self.kind}, {self.method}, {self.body[:120]!r}..., len={len(self.body)})"


def is_chatkit_request(body: bytes) -> bool:
    try:
        _REQUEST.validate_json(body)
    except (ValidationError, RecursionError, ValueError):
        return False
    return True


# -- strategies --------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from([MARKUP, "", "thr_1", "threads.create", "\u2028", "\x00"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def truncated(draw: st.DrawFn) -> Case:
    body = draw(st.sampled_from(VALID_BODIES))
    cut = draw(st.integers(min_value=0, max_value=len(body) - 1))
    return Case("truncated", "POST", body[:cut], expect=400)


@st.composite
def garbage(draw: st.DrawFn) -> Case:
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
            st.sampled_from(
                [b"", b" ", b"null", b"[]", b"{}", b"0", b'"x"', b"\xef\xbb\xbf{}", b"{" * 3]
            ),
        )
    )
    return Case("garbage", "POST", body, expect=400)


@st.composite
def wrong_shapes(draw: st.DrawFn) -> Case:
    value = draw(
        st.one_of(
            json_values,
            st.fixed_dictionaries({"type": json_values}),
            st.fixed_dictionaries({"type": st.sampled_from(REQUEST_TYPES), "params": json_values}),
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(REQUEST_TYPES),
                    "params": st.dictionaries(
                        st.sampled_from(
                            ["thread_id", "input", "item_ids", "kind", "title", "limit", "after"]
                        ),
                        json_values,
                        max_size=3,
                    ),
                    "metadata": json_values,
                }
            ),
        )
    )
    body = json.dumps(value).encode()
    return Case("wrong_shape", "POST", body, expect=400)


@st.composite
def unknown_types(draw: st.DrawFn) -> Case:
    name = draw(
        st.one_of(
            st.text(max_size=30).map(lambda t: "x." + t),
            st.sampled_from([MARKUP, "THREADS.CREATE", "threads.create ", "threads", ""]),
        )
    )
    return Case(
        "unknown_type", "POST", json.dumps({"type": name, "params": {}}).encode(), expect=400
    )


@st.composite
def huge_strings(draw: st.DrawFn) -> Case:
    size = draw(st.integers(min_value=2_000, max_value=MAX_BODY_SIZE - 200))
    char = draw(st.sampled_from(["A", "<", "\u00e9", '"', "\\"]))
    where = draw(st.sampled_from(["type", "thread_id", "key", "raw"]))
    big = (char * size)[: size // 2 if char in "\u00e9" else size]
    if where == "type":
        value: Any = {"type": MARKUP + big, "params": {}}
    elif where == "thread_id":
        value = {"type": "threads.get_by_id", "params": {"thread_id": 12345, "x": big}}
    elif where == "key":
        value = {"type": "threads.update", "params": {MARKUP + big: 1}}
    else:
        return Case("huge_string", "POST", (MARKUP + big).encode()[: MAX_BODY_SIZE - 1], expect=400)
    body = json.dumps(value).encode()
    return Case("huge_string", "POST", body[: MAX_BODY_SIZE - 1], expect=400)


@st.composite
def deep_nesting(draw: st.DrawFn) -> Case:
    depth = draw(st.integers(min_value=100, max_value=3_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "1" + closer * depth
    where = draw(st.sampled_from(["root", "params", "input", "unclosed"]))
    if where == "root":
        text = nested
    elif where == "params":
        text = '{"type":"threads.create","params":' + nested + "}"
    elif where == "input":
        text = (
            '{"type":"threads.add_user_message","params":{"thread_id":"thr_1",'
            '"input":{"content":' + nested + ',"attachments":[],"inference_options":{}}}}'
        )
    else:
        text = '{"type":"threads.list","params":' + opener * depth
    return Case("deep_nesting", "POST", text.encode()[: MAX_BODY_SIZE - 1], expect=400)


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Case:
    body = draw(st.sampled_from(VALID_BODIES))
    bad = draw(
        st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80\x80"])
    )
    # inside a string value (after the first quote of the last string) or anywhere
    position = draw(st.integers(min_value=0, max_value=len(body)))
    return Case("invalid_utf8", "POST", body[:position] + bad + body[position:], expect=400)


@st.composite
def bad_base64(draw: st.DrawFn) -> Case:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    # 4k+1 data characters can never be decoded (binascii.Error), whatever the padding
    groups = draw(st.integers(min_value=0, max_value=20))
    data = draw(st.text(alphabet=alphabet, min_size=4 * groups + 1, max_size=4 * groups + 1))
    padding = draw(st.sampled_from(["", "=", "==", "==="]))
    body = json.dumps(
        {
            "type": "input.transcribe",
            "params": {"audio_base64": data + padding, "mime_type": "audio/webm"},
        }
    ).encode()
    return Case("bad_base64", "POST", body, expect=400)


@st.composite
def oversized(draw: st.DrawFn) -> Case:
    size = draw(st.integers(min_value=MAX_BODY_SIZE + 1, max_value=MAX_BODY_SIZE * 3))
    chunked = draw(st.booleans())
    prefix = draw(st.sampled_from(VALID_BODIES))[:-1]
    body = (prefix + b" " * size)[:size]
    return Case("oversized", "POST", body, chunked=chunked, expect=413)


@st.composite
def wrong_methods(draw: st.DrawFn) -> Case:
    method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]))
    body = draw(st.sampled_from([b"", *VALID_BODIES]))
    return Case("wrong_method", method, body if method != "GET" else b"", expect=405)


cases = st.one_of(
    truncated(),
    garbage(),
    wrong_shapes(),
    unknown_types(),
    huge_strings(),
    deep_nesting(),
    invalid_utf8(),
    bad_base64(),
    oversized(),
    wrong_methods(),
)


# -- checks ------------------------------------------------------------------------------


def check_error(response: Response, case: Case) -> None:
    assert 400 <= response.status < 500, (response.status, response.body[:300])
    if case.expect is not None:
        assert response.status == case.expect, (response.status, response.body[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    payload = json.loads(response.body)
    assert set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == {"type", "message"}, error
    assert isinstance(error["type"], str) and error["type"]
    message = error["message"]
    assert isinstance(message, str) and 0 < len(message) <= MAX_MESSAGE, message
    assert "Traceback" not in message and 'File "' not in message
    assert len(response.body) < 1024
    assert b"<script" not in response.body.lower(), response.body
    if response.status == 405:
        assert response.headers["allow"] == "POST"


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 16 * 1024):
        yield body[start : start + 16 * 1024]


@pytest.fixture(scope="module", autouse=True)
def _boot_real_servers_early(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Real servers boot in the background while the in-process fuzzing runs."""
    if any(item.get_closest_marker("realserver") for item in request.session.items):
        prestart_shared(all_real_targets(), tmp_path_factory.getbasetemp())


def _adapters() -> list[Any]:
    return [
        pytest.param(name, id=name, marks=[getattr(pytest.mark, name.split("_")[0])])
        for name in CLIENTS
    ]


@pytest.mark.parametrize("adapter", _adapters())
def test_malformed_requests_get_documented_4xx(adapter: str) -> None:
    client_class = load_client(adapter)
    server = make_server(write_delay=0.001, journal="")
    store = server.journal_store
    tried: dict[str, int] = {}
    started = time.monotonic()

    with asyncio.Runner() as runner:
        client: HttpClient = runner.run(_make(client_class, server, max_body_size=MAX_BODY_SIZE))

        @settings(
            max_examples=BODIES_PER_ADAPTER * 11 // 10,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases)
        def run(case: Case) -> None:
            if case.kind in ACCIDENTALLY_VALID and is_chatkit_request(case.body):
                return  # e.g. random params that happen to make a valid threads.list
            body: bytes | AsyncIterator[bytes] = _chunks(case.body) if case.chunked else case.body
            response = runner.run(client.request(case.method, body))
            if case.method != "POST" and "view" not in client_class.own_405_variants:
                # the framework's router answers other methods itself (as documented)
                assert response.status == 405 and "POST" in response.headers["allow"]
            else:
                check_error(response, case)
            assert store.calls == [], (case, store.calls)
            tried[case.kind] = tried.get(case.kind, 0) + 1

        try:
            run()
        finally:
            runner.run(client.aclose())

    total = sum(tried.values())
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(tried.items()))
    MEASUREMENTS.append(
        f"fuzz [{adapter}]: {total} malformed requests, all 4xx JSON errors, store untouched"
        f" ({kinds}; {time.monotonic() - started:.1f} s)"
    )
    assert total >= BODIES_PER_ADAPTER, tried
    assert len(tried) >= 9, tried


# Non-ASCII digits in Content-Length: "\u00b2" (isdigit, int() fails), Arabic-Indic
# "\u0661\u0662" and fullwidth "\uff11\uff12" (int() reads them as 12). In-process WSGI
# transports hand the header to the adapter as given (ASGI headers are bytes, and real
# servers decode latin-1: the socket cases above cover those).
NON_ASCII_DIGITS = st.characters(categories=["Nd", "No"], exclude_characters="0123456789")
CONTENT_LENGTHS = st.one_of(
    st.sampled_from(["\u00b2", "\u0661\u0662", "\uff11\uff12", "1\u00b2", "\u0661"]),
    st.text(NON_ASCII_DIGITS, min_size=1, max_size=4),
    st.builds(
        lambda head, digit: head + digit,
        st.text(st.sampled_from("0123456789"), max_size=3),
        NON_ASCII_DIGITS,
    ),
)
WSGI_IN_PROCESS = [name for name in CLIENTS if name in ("wsgi", "flask", "django_wsgi")]


@pytest.mark.parametrize(
    "adapter",
    [
        pytest.param(name, id=name, marks=[getattr(pytest.mark, name.split("_")[0])])
        for name in WSGI_IN_PROCESS
    ],
)
def test_non_ascii_digits_in_content_length_are_400(adapter: str) -> None:
    client_class = load_client(adapter)
    server = make_server(write_delay=0.001, journal="")
    body = list_threads()
    seen: list[str] = []
    with asyncio.Runner() as runner:
        client: HttpClient = runner.run(_make(client_class, server))

        @settings(max_examples=60, deadline=None, derandomize=True, database=None)
        @given(value=CONTENT_LENGTHS)
        def run(value: str) -> None:
            response = runner.run(client.post(body, headers={"content-length": value}))
            assert response.status == 400, (value, response.status, response.body[:200])
            error = json.loads(response.body)["error"]
            assert error["type"] == "invalid_request"
            # refused for its header, not read as 12 and then refused for a cut body
            assert error["message"].startswith("Invalid Content-Length"), error
            seen.append(value)

        try:
            run()
        finally:
            runner.run(client.aclose())
    assert "\u0661\u0662" in seen and "\u00b2" in seen
    assert server.journal_store.calls == []


async def _make(client_class: type[HttpClient], server: Any, **options: Any) -> HttpClient:
    return client_class(server, variant="view", **options)


# -- Content-Length over a raw socket ---------------------------------------------------


def _raw(address: tuple[str, int], head: list[str], body: bytes, timeout: float = 3.0) -> bytes:
    """Send a request head and *body*, half-close, return everything answered."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionError):
                break
            if not data:
                break
            received += data
            if _complete(received):
                break
        return received


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return body.endswith(b"0\r\n\r\n")


RAW_LIMIT = SHARED_OPTIONS["max_body_size"]
_BIG = b"x" * (RAW_LIMIT * 4)
RAW_CASES: dict[str, tuple[list[str], bytes, tuple[int, ...]]] = {
    # declares more than the limit and sends nothing: refused from the header alone
    "declared_too_large": ([f"Content-Length: {RAW_LIMIT * 100}"], b"", (413,)),
    # declares less than it sends: the adapter sees a truncated body (the server may also
    # refuse the leftover bytes as a second request)
    "declared_too_small": (
        [f"Content-Length: {len(list_threads()) - 5}"],
        list_threads(),
        (400,),
    ),
    # no Content-Length, chunked, longer than the limit: refused while reading
    "chunked_too_large": (
        ["Transfer-Encoding: chunked"],
        b"".join(
            f"{len(_BIG[i : i + 512]):x}\r\n".encode() + _BIG[i : i + 512] + b"\r\n"
            for i in range(0, len(_BIG), 512)
        )
        + b"0\r\n\r\n",
        (413,),
    ),
    # Content-Length in digits that are not ASCII: "²" is latin-1 (a server hands it to the
    # app as is), isdigit() says yes and int() fails; never a 500
    "content_length_superscript": (["Content-Length: \u00b2"], list_threads(), (400,)),
    "content_length_superscripts": (["Content-Length: \u00b9\u00b2"], list_threads(), (400,)),
    # chunked, lying about its chunk size: the server's parser refuses it, or the adapter
    # cannot read the body; either way a 400, never a 500
    "chunked_lying": (
        ["Transfer-Encoding: chunked"],
        b"5\r\n" + list_threads()[:20] + b"\r\n0\r\n\r\n",
        (400,),
    ),
}


def _raw_params() -> list[Any]:
    params = []
    for target in real_server_params(first_only=True):
        adapter = target.values[0][0]
        for case in RAW_CASES:
            marks = list(target.marks)
            if adapter.startswith("django") and case == "declared_too_large":
                marks.append(
                    pytest.mark.xfail(
                        strict=False,
                        reason="Django reads the declared body before any view runs: a"
                        " client that declares more than it sends gets no answer",
                    )
                )
            params.append(
                pytest.param(target.values[0], case, id=f"{target.id}-{case}", marks=marks)
            )
    return params


@pytest.mark.realserver
@pytest.mark.parametrize(("target", "case"), _raw_params())
def test_lying_or_missing_content_length_over_a_socket(
    target: tuple[str, str],
    case: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    adapter, server_name = target
    running = shared_server(adapter, server_name, tmp_path_factory.getbasetemp())
    base = [
        "POST /chatkit HTTP/1.1",
        f"Host: 127.0.0.1:{running.port}",
        "Content-Type: application/json",
        "Connection: close",
    ]
    head, payload, allowed = RAW_CASES[case]
    seen = len(running.output())
    hangs = adapter.startswith("django") and case == "declared_too_large"  # see the xfail
    answer = _raw(running.address, base + head, payload, timeout=2.0 if hangs else 10.0)
    assert answer, "no answer"
    status, data = parse_response(answer)
    assert status in allowed, (status, data[:300])
    if data.startswith(b"{"):
        error = json.loads(data)["error"]
        assert set(error) == {"type", "message"} and len(error["message"]) <= MAX_MESSAGE
    # the server stays healthy, and logged no traceback for it
    body = list_threads()
    ok, _ = parse_response(_raw(running.address, [*base, f"Content-Length: {len(body)}"], body))
    assert ok == 200
    log = running.output()[seen:]
    # (a server's own HTTP parser may log what it refused, e.g. aiohttp's BadHttpMessage;
    # the app must log nothing: no traceback through the adapter or the framework app)
    for marker in ("chatkit_adapters/", "Exception in ASGI application", "Internal Server"):
        assert marker not in log, log[-3000:]
    MEASUREMENTS.append(f"raw request [{adapter}-{server_name}] {case}: {status}")


def test_base64_sanity() -> None:
    # the bad_base64 strategy really produces undecodable data
    import binascii

    with pytest.raises(binascii.Error):
        base64.b64decode("AAAAA")
