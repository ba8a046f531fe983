"""FastAPI: your own route with ``Depends`` for auth.  Run: ``uvicorn examples.fastapi_app:app``

(The one-liner also works: ``app.add_api_route("/chatkit", chatkit_view(server, context=...),
methods=["POST"])``.)
"""

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware

from chatkit_adapters.fastapi import chatkit_response, chatkit_routes
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import CORS_HEADERS, user_id

server = DemoServer(open_store())
app = FastAPI()
app.add_middleware(
    CORSMiddleware,
    allow_origins=["http://localhost:5173"],
    allow_methods=["GET", "POST", "PUT"],
    allow_headers=CORS_HEADERS,
)


def current_user(request: Request) -> str:
    """Your authentication goes here; the demo trusts a header or cookie."""
    user = user_id(request.headers, request.cookies)
    if not user:
        raise HTTPException(401, "Not signed in")
    return user


@app.post("/chatkit")
async def chatkit(request: Request, user: str = Depends(current_user)):
    return await chatkit_response(server, request, DemoContext(user_id=user))


# uploads at /chatkit/attachments, files at /chatkit/attachments/{id}/content
app.include_router(
    chatkit_routes(server, context=lambda request: DemoContext(user_id=current_user(request))),
    prefix="/chatkit",
)
