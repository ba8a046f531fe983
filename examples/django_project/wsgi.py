"""``gunicorn -k gthread --threads 32 examples.django_project.wsgi:application``"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")
application = get_wsgi_application()

from examples.django_project.migrate import migrate  # noqa: E402  (needs the apps loaded)

migrate()
