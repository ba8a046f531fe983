"""Django: one ``path()`` line, streaming under ASGI and WSGI alike.

ASGI:  ``uvicorn examples.django_project.asgi:application``   (or daphne)
WSGI:  ``python examples/django_project/manage.py runserver``  (or gunicorn -k gthread
       ``examples.django_project.wsgi:application``)
"""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from chatkit_adapters.django import chatkit_routes, chatkit_view
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.store import open_store
from examples.demo.web import PAGE, user_id

server = DemoServer(open_store())  # DATABASE_URL, default sqlite:///chatkit-demo.db


def context(request: HttpRequest) -> DemoContext:
    # With django.contrib.auth: DemoContext(user_id=str(request.user.pk)), and raise
    # PermissionDenied for anonymous users; the factory may use the ORM.
    return DemoContext(user_id=user_id(request.headers, request.COOKIES))


def page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)


urlpatterns = [
    path("", page),
    path("chatkit", chatkit_view(server, context=context)),
    # uploads at chatkit/attachments/, files at chatkit/attachments/<id>/content/
    # (include() alone serves the endpoint too, at chatkit/)
    path("chatkit/", include(chatkit_routes(server, context=context))),
]
