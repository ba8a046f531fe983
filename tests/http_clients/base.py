"""The client interface of the conformance suite and a normalized response."""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from chatkit.server import ChatKitServer


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


ContextFactory = Callable[[Any], Any]


class HttpClient(ABC):
    """Drives one adapter in one framework app."""

    name: ClassVar[str]
    variants: ClassVar[tuple[str, ...]] = ("view", "response", "middleware")
    # variants whose route is registered for every method, so the adapter itself answers
    # non-POST requests (elsewhere the framework's router answers 405)
    own_405_variants: ClassVar[tuple[str, ...]] = ("view", "middleware", "mounted")
    # the context factory may be async (async frameworks)
    async_context: ClassVar[bool] = True
    # real servers (names in tests.realserver.SERVERS) the real-server tests run it under
    real_servers: ClassVar[tuple[str, ...]] = ()
    # the variants the real-server disconnect and backpressure tests run (the bare view and
    # the middleware stack, where the client has one)
    real_server_variants: ClassVar[tuple[str, ...]] = ("view", "middleware")
    # a request body given as an async iterator reaches the app one chunk per read, as the
    # app reads it (so how many chunks were taken shows where the adapter stopped reading);
    # False where the framework or the transport takes the whole body first
    body_read_on_demand: ClassVar[bool] = True
    # the framework's own HTTP parser answers a malformed Content-Length with its own 400
    # before the adapter runs
    server_refuses_bad_content_length: ClassVar[bool] = False
    path = "/chatkit"
    # the endpoint of the app make_routes_app builds (chatkit_routes under /chatkit)
    routes_path: ClassVar[str] = "/chatkit/"

    def __init__(
        self,
        server: ChatKitServer[Any],
        context: ContextFactory | None = None,
        variant: str = "view",
        **options: Any,
    ) -> None:
        self.server = server
        self.context = context
        self.variant = variant
        self.options = options

    @abstractmethod
    async def request(
        self,
        method: str,
        body: bytes | AsyncIterator[bytes] = b"",
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> Response: ...

    @classmethod
    def make_routes_app(
        cls, server: ChatKitServer[Any], context: ContextFactory | None = None, **options: Any
    ) -> Any:
        """The framework's app with ``chatkit_routes`` under ``/chatkit`` (variant "routes")."""
        raise NotImplementedError

    def build_app(self) -> Any:
        if self.variant == "routes":
            self.path = self.routes_path
            return self.make_routes_app(self.server, self.context, **self.options)
        return self.make_app(self.server, self.context, self.variant, **self.options)

    async def post(
        self, body: bytes | AsyncIterator[bytes], headers: Mapping[str, str] | None = None
    ) -> Response:
        return await self.request("POST", body, headers)

    async def aclose(self) -> None:
        return None

    @staticmethod
    @abstractmethod
    def header(native_request: Any, name: str) -> str | None:
        """Read a request header from what the context factory receives."""

    @staticmethod
    @abstractmethod
    def unauthorized() -> BaseException:
        """The framework's own '401 Unauthorized' exception, as its users raise it."""

    @classmethod
    @abstractmethod
    def make_app(
        cls,
        server: ChatKitServer[Any],
        context: ContextFactory | None = None,
        variant: str = "view",
        **options: Any,
    ) -> Any:
        """The framework's app serving the adapter at ``/chatkit`` (used by real servers too)."""


class AsgiHttpClient(HttpClient):
    """A client for adapters that produce an ASGI app, driven by httpx in-process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = self.build_app()
        if self.variant == "mounted":
            self.path = "/chatkit/"
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
            base_url="http://testserver",
        )

    async def request(
        self,
        method: str,
        body: bytes | AsyncIterator[bytes] = b"",
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> Response:
        response = await self._client.request(
            method, path or self.path, content=body, headers=dict(headers or {})
        )
        return Response(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


async def call_factory(factory: ContextFactory | None, request: Any) -> Any:
    """What a user-written route does before calling ``chatkit_response``."""
    if factory is None:
        return {}
    value = factory(request)
    if isinstance(value, Awaitable):
        value = await value
    return value


async def raw_request(
    address: tuple[str, int], method: str, path: str, body: bytes, headers: Mapping[str, str]
) -> Response:
    """One request on a raw socket, headers sent exactly as given (no Content-Length added),
    for what HTTP clients refuse to send (a malformed Content-Length) to a real server."""
    reader, writer = await asyncio.open_connection(*address)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {address[0]}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    raw = await reader.read()
    writer.close()
    head, _, data = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {k.lower(): v for k, _, v in (line.partition(": ") for line in header_lines)}
    return Response(int(status_line.split()[1]), parsed, data)
