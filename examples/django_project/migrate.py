"""The example applies its migrations when it starts, so that one command runs it.

A real project runs ``python manage.py migrate`` when it deploys instead.
"""

import threading


def migrate() -> None:
    """``manage.py migrate`` on a thread of its own: servers such as uvicorn import the app
    from inside their event loop, where Django refuses to touch the database."""
    from django.core.management import call_command

    failure: list[BaseException] = []

    def run() -> None:
        try:
            call_command("migrate", interactive=False, verbosity=0)
        except BaseException as exc:  # re-raised below, on the importing thread
            failure.append(exc)
        finally:
            from django.db import connections

            connections.close_all()

    worker = threading.Thread(target=run, name="migrate")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
