"""``uvicorn examples.django_project.asgi:application``"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")
application = get_asgi_application()

from examples.django_project.migrate import migrate  # noqa: E402  (needs the apps loaded)

migrate()
