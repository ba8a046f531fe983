"""Django: one ``path()`` line, streaming under ASGI and WSGI alike, stored with the ORM.

ASGI:  ``uvicorn examples.django_project.asgi:application``   (or daphne)
WSGI:  ``python examples/django_project/manage.py runserver``  (or gunicorn -k gthread
       ``examples.django_project.wsgi:application``)

Threads are stored by :class:`~chatkit_adapters.stores.django.DjangoStore` per user: the
signed-in Django user (``request.user``; sign in at ``/admin/``, where the threads and
items are listed read-only), else the demo's ``X-User-Id`` header or cookie as a guest.
"""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from chatkit_adapters.django import chatkit_routes, chatkit_view
from chatkit_adapters.stores.django import DjangoStore
from examples.demo.context import DemoContext
from examples.demo.server import DemoServer
from examples.demo.web import PAGE, user_id

server = DemoServer(DjangoStore())


def context(request: HttpRequest) -> DemoContext:
    # A sync factory runs in a sync thread: request.user (the session, the ORM) works here.
    # A project with login only: raise PermissionDenied for anonymous users instead.
    if request.user.is_authenticated:
        return DemoContext(user_id=str(request.user.pk))
    return DemoContext(user_id="guest:" + user_id(request.headers, request.COOKIES))


def page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)


urlpatterns = [
    path("", page),
    path("admin/", admin.site.urls),
    path("chatkit", chatkit_view(server, context=context)),
    # uploads at chatkit/attachments/, files at chatkit/attachments/<id>/content/
    # (include() alone serves the endpoint too, at chatkit/)
    path("chatkit/", include(chatkit_routes(server, context=context))),
]
