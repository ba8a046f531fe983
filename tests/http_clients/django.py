"""Django under ASGI (``ASGIHandler`` driven by httpx) and under WSGI (``WSGIHandler``
driven by werkzeug's test client in a worker thread), with Django's default middleware.

Two clients: ``django`` (ASGI) and ``django_wsgi`` (WSGI). Variants: ``view``
(``chatkit_view``) and ``response`` (a user-written view: async with ``achatkit_response``
under ASGI, sync with ``chatkit_response`` under WSGI). Each app routes through its own
URLconf (set as ``request.urlconf``), so apps coexist in one process.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import django
import httpx
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import include, path
from django.utils.deprecation import MiddlewareMixin
from werkzeug.test import Client

from chatkit_adapters.django import (
    achatkit_response,
    chatkit_response,
    chatkit_routes,
    chatkit_view,
)

from .base import HttpClient, Response, call_factory
from .wsgi_base import AsyncBodyReader

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_settings")
django.setup()


class Unauthorized(Exception):
    """Django has no 401 exception; projects define one and render it in a middleware."""


class UnauthorizedMiddleware(MiddlewareMixin):
    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        if isinstance(exception, Unauthorized):
            return HttpResponse("unauthorized", status=401)
        return None


class URLConf:
    def __init__(self, view: Any) -> None:
        self.urlpatterns = [path("chatkit", view)]


class RoutesURLConf:
    def __init__(self, routes: Any) -> None:
        self.urlpatterns = [path("chatkit/", include(routes))]


class ASGIApp(ASGIHandler):  # type: ignore[misc]
    def __init__(self, urlconf: URLConf) -> None:
        super().__init__()
        self.urlconf = urlconf

    async def get_response_async(self, request: HttpRequest) -> Any:
        request.urlconf = self.urlconf
        return await super().get_response_async(request)


class WSGIApp(WSGIHandler):  # type: ignore[misc]
    def __init__(self, urlconf: URLConf) -> None:
        super().__init__()
        self.urlconf = urlconf

    def get_response(self, request: HttpRequest) -> Any:
        request.urlconf = self.urlconf
        return super().get_response(request)


def _sync_factory(context: Any, request: Any) -> Any:
    value = context(request) if context is not None else {}
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    return async_to_sync(wait)()


def user_view(server: Any, context: Any, sync: bool, **options: Any) -> Any:
    """A user-written view: sync (``chatkit_response``) or async (``achatkit_response``).

    (Not ``csrf_exempt``/``require_POST`` decorators: those wrap async views only since 5.0.)
    """
    if sync:

        def sync_view(request: HttpRequest) -> Any:
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            ctx = _sync_factory(context, request)
            return chatkit_response(server, request, ctx, **options)

        view: Any = sync_view
    else:

        async def async_view(request: HttpRequest) -> Any:
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            ctx = await call_factory(context, request)
            return await achatkit_response(server, request, ctx, **options)

        view = async_view
    view.csrf_exempt = True
    return view


NO_LENGTH = "tests.no_content_length"


def without_length(app: Any) -> Any:
    """werkzeug's test client always sets ``CONTENT_LENGTH``; a server that dechunked a
    body sets none (marked with ``NO_LENGTH`` in the environ)."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.pop(NO_LENGTH, False):
            environ.pop("CONTENT_LENGTH", None)
        return app(environ, start_response)

    return wsgi


class DjangoClient(HttpClient):
    """Django under ASGI: ``ASGIHandler`` driven in-process by httpx."""

    name = "django"
    variants = ("view", "response")
    own_405_variants = ("view",)
    real_servers: tuple[str, ...] = ("uvicorn", "daphne", "hypercorn", "granian-asgi")
    real_server_variants = ("view",)  # the view is behind Django's default middleware
    # Django's ASGIHandler reads the whole request body before it calls any view
    body_read_on_demand = False
    wsgi = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = self.build_app()
        if self.wsgi:
            self._wsgi_client = Client(without_length(self.app), use_cookies=False)
        else:
            self._client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
                base_url="http://testserver",
            )

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        view = user_view(server, context, sync=cls.wsgi, **options)
        if variant != "response":
            view = chatkit_view(server, context=context, **options)
        return (WSGIApp if cls.wsgi else ASGIApp)(URLConf(view))

    async def request(
        self,
        method: str,
        body: bytes | AsyncIterator[bytes] = b"",
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> Response:
        if self.wsgi:
            return await self._wsgi_request(method, body, dict(headers or {}), path)
        response = await self._client.request(
            method, path or self.path, content=body, headers=dict(headers or {})
        )
        return Response(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
        )

    async def _wsgi_request(
        self,
        method: str,
        body: bytes | AsyncIterator[bytes],
        headers: dict[str, str],
        path: str | None = None,
    ) -> Response:
        overrides: dict[str, Any] = {}
        stream: Any
        if isinstance(body, bytes):
            stream = io.BytesIO(body)
            headers.setdefault("content-length", str(len(body)))
        else:  # a chunked body: the server dechunks it as the app reads, and says so
            stream = io.BytesIO()
            overrides["wsgi.input"] = AsyncBodyReader(body, asyncio.get_running_loop())
            overrides["wsgi.input_terminated"] = True
            overrides[NO_LENGTH] = True  # and sends no CONTENT_LENGTH
        length = headers.pop("content-length", None)
        if length is not None:
            overrides["CONTENT_LENGTH"] = length

        def call() -> Response:
            response = self._wsgi_client.open(
                path or self.path,
                method=method,
                input_stream=stream,
                headers=headers,
                environ_overrides=overrides,
                buffered=True,
            )
            return Response(
                response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
                response.get_data(),
            )

        return await asyncio.to_thread(call)

    async def aclose(self) -> None:
        if not self.wsgi:
            await self._client.aclose()

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        routes = chatkit_routes(server, context=context, **options)
        return (WSGIApp if cls.wsgi else ASGIApp)(RoutesURLConf(routes))

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        return native_request.headers.get(name)  # type: ignore[no-any-return]

    @staticmethod
    def unauthorized() -> BaseException:
        return Unauthorized()


class DjangoWSGIClient(DjangoClient):
    """Django under WSGI: ``WSGIHandler`` driven by werkzeug's test client in a thread."""

    name = "django_wsgi"
    real_servers = ("gunicorn-gthread",)
    body_read_on_demand = True  # WSGIRequest reads wsgi.input as the view reads
    wsgi = True
