"""Django settings of the test apps: Django's default middleware, in-memory SQLite.

Also the (empty) root URLconf: each test app routes through its own ``request.urlconf``.
"""

SECRET_KEY = "chatkit-adapters-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "chatkit_adapters.stores.django",  # DjangoStore's tests (tests/storedb.py adds databases)
]
# The list ``django-admin startproject`` writes.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # renders the client's ``Unauthorized`` as 401, as projects do for their own exceptions
    "tests.http_clients.django.UnauthorizedMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # one in-memory database shared by every thread's connection
        "NAME": "file:chatkit-adapters-tests?mode=memory&cache=shared",
    }
}
ROOT_URLCONF = "tests.django_settings"
urlpatterns: list[object] = []
