"""Cross-origin protection (design.md, "Cross-origin protection"), on every adapter and
variant, and the core's decision table.

A browser sends some cross-origin POSTs without a CORS preflight (``text/plain``,
``multipart/form-data``, ``application/x-www-form-urlencoded`` bodies) and with the
user's cookies; every route refuses them (403) unless the origin is trusted. A JSON body
passed a preflight; requests without browser headers pass.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatkit_adapters import ChatKitHTTPError, Options
from chatkit_adapters._core import check_origin
from tests.chatkit_app import JournalStore, create_thread, list_threads
from tests.conftest import MakeClient
from tests.test_conformance import assert_json_error

SIMPLE_TYPES = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
]


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
async def test_cross_site_simple_requests_are_refused(
    make_client: MakeClient, store: JournalStore, site: str, content_type: str
) -> None:
    client = await make_client()
    for body in (create_thread("deltas=2"), list_threads()):
        response = await client.post(
            body,
            headers={
                "content-type": content_type,
                "sec-fetch-site": site,
                "origin": "https://evil.example",
            },
        )
        error = assert_json_error(response, 403, "forbidden")
        assert "trusted_origins" in error["message"]
    assert store.calls == []


async def test_origin_of_another_host_without_fetch_metadata_is_refused(
    make_client: MakeClient, store: JournalStore
) -> None:
    client = await make_client()
    response = await client.post(
        create_thread(),
        headers={
            "content-type": "text/plain",
            "origin": "https://evil.example",
            "host": "chat.example",
        },
    )
    assert_json_error(response, 403, "forbidden")
    assert store.calls == []


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "same-origin", "origin": "http://chat.example"},
        {"sec-fetch-site": "none"},
        {"origin": "http://chat.example", "host": "chat.example"},
        {"origin": "http://chat.example:80", "host": "chat.example"},
        {"origin": "https://chat.example", "host": "chat.example:443"},
        {},  # curl, server-to-server: no browser headers
    ],
    ids=["same-origin", "user-initiated", "origin-is-host", "default-port", "https-port", "none"],
)
async def test_same_origin_and_non_browser_requests_pass(
    make_client: MakeClient, headers: dict[str, str]
) -> None:
    client = await make_client()
    response = await client.post(list_threads(), headers={"content-type": "text/plain", **headers})
    assert response.status == 200, response.body[:300]


async def test_preflighted_json_requests_pass(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.post(
        create_thread("deltas=2"),
        headers={
            "content-type": "application/json",
            "sec-fetch-site": "cross-site",
            "origin": "https://app.example",
        },
    )
    assert response.status == 200, response.body[:300]
    assert response.headers["content-type"].startswith("text/event-stream")


async def test_trusted_origins_pass_and_others_do_not(
    make_client: MakeClient, store: JournalStore
) -> None:
    client = await make_client(trusted_origins=["https://App.Example"])
    headers = {"content-type": "text/plain", "sec-fetch-site": "cross-site"}
    response = await client.post(
        list_threads(), headers={**headers, "origin": "https://app.example"}
    )
    assert response.status == 200, response.body[:300]
    for origin in ("https://app.example:8443", "http://app.example", "https://evil.example"):
        response = await client.post(list_threads(), headers={**headers, "origin": origin})
        assert_json_error(response, 403, "forbidden")


async def test_require_json_still_applies_to_same_origin(make_client: MakeClient) -> None:
    client = await make_client(require_json=True)
    response = await client.post(
        list_threads(), headers={"content-type": "text/plain", "sec-fetch-site": "same-origin"}
    )
    assert_json_error(response, 415, "unsupported_media_type")


# -- the core's decision table ------------------------------------------------------------


class Headers(dict[str, str]):
    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


def allowed(method: str = "POST", trusted: tuple[str, ...] = (), **headers: str) -> bool:
    normalized = Headers({k.replace("_", "-").lower(): v for k, v in headers.items()})
    try:
        check_origin(method, normalized, Options(trusted_origins=trusted))
    except ChatKitHTTPError as exc:
        assert exc.status == 403
        return False
    return True


def test_safe_methods_always_pass() -> None:
    for method in ("GET", "HEAD", "OPTIONS", "get"):
        assert allowed(method, sec_fetch_site="cross-site", origin="https://evil.example")


def test_decision_table() -> None:
    assert not allowed(sec_fetch_site="cross-site")
    assert not allowed(sec_fetch_site="same-site", origin="https://a.example")
    assert not allowed(sec_fetch_site="something-new", origin="https://a.example")
    assert allowed(sec_fetch_site="Same-Origin")
    assert not allowed(origin="null", host="a.example")  # sandboxed frames, file: pages
    assert not allowed(origin="https://a.example.evil", host="a.example")
    assert not allowed(origin="https://a.example/path", host="a.example")
    assert allowed(origin="https://A.example", host="a.EXAMPLE")
    assert not allowed(origin="https://a.example:8443", host="a.example")
    assert allowed(origin="https://a.example:8443", host="a.example:8443")
    assert allowed(content_type="Application/JSON; charset=utf-8", sec_fetch_site="cross-site")
    assert not allowed(content_type="application/json-seq", sec_fetch_site="cross-site")
    assert not allowed(content_type="text/plain; a=application/json", sec_fetch_site="cross-site")
    trusted = ("https://app.example",)
    assert allowed(trusted=trusted, sec_fetch_site="cross-site", origin="https://app.example")
    assert allowed(trusted=trusted, sec_fetch_site="cross-site", origin="https://app.example:443")
    assert not allowed(trusted=trusted, sec_fetch_site="cross-site")  # no Origin to match


@pytest.mark.parametrize(
    "bad",
    ["app.example", "https://app.example/path", "https://app.example?x=1", "null", "https://"],
)
def test_trusted_origins_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="trusted_origins"):
        Options(trusted_origins=[bad])


def test_trusted_origins_is_a_collection_not_a_string() -> None:
    with pytest.raises(TypeError):
        Options(trusted_origins="https://app.example")
    options = Options(trusted_origins=["https://App.example:443/", "http://localhost:5173"])
    assert options.trusted_origins == {"https://app.example", "http://localhost:5173"}
