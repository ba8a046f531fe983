from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request

from chatkit_adapters.fastapi import chatkit_response, chatkit_routes, chatkit_view

from .base import AsgiHttpClient, call_factory
from .starlette import MIDDLEWARE, reads_body_on_demand


class FastAPIClient(AsgiHttpClient):
    name = "fastapi"
    real_servers = ("uvicorn",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_read_on_demand = reads_body_on_demand(self.variant)  # type: ignore[misc]

    @classmethod
    def make_app(
        cls, server: Any, context: Any = None, variant: str = "view", **options: Any
    ) -> Any:
        if variant == "response":
            app = FastAPI()

            async def make_context(request: Request) -> Any:
                return await call_factory(context, request)

            @app.post("/chatkit")
            async def chatkit(request: Request, ctx: Any = Depends(make_context)) -> Any:  # noqa: B008
                return await chatkit_response(server, request, ctx, **options)

            return app
        middleware = MIDDLEWARE if variant == "middleware" else None
        app = FastAPI(middleware=middleware)
        router = APIRouter()
        view = chatkit_view(server, context=context, **options)
        router.add_api_route("/chatkit", view, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
        app.include_router(router)
        return app

    @classmethod
    def make_routes_app(cls, server: Any, context: Any = None, **options: Any) -> Any:
        app = FastAPI()
        app.include_router(chatkit_routes(server, context, **options), prefix="/chatkit")
        return app

    @staticmethod
    def header(native_request: Any, name: str) -> str | None:
        return native_request.headers.get(name)

    @staticmethod
    def unauthorized() -> BaseException:
        return HTTPException(401, "no credentials")
