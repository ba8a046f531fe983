"""A throwaway MariaDB server for tests, and the session fixture ``mariadb_url``.

Where the URL comes from, in order:

1. ``CHATKIT_TEST_NO_MARIADB=1``: no MariaDB, tests that need it are skipped (for local runs
   without the server; never set it in CI);
2. ``CHATKIT_TEST_MARIADB_URL``: an existing database (``mysql://user:pw@host:port/db``),
   used as is (tests keep to their own rows, as it is not emptied);
3. MariaDB's server binaries (Debian's ``mariadb-server``: ``mariadb-install-db`` and
   ``mariadbd`` on ``PATH`` or in ``/usr/sbin``, or ``CHATKIT_TEST_MARIADB_BINDIR``): a new
   data directory in a temporary directory, the server listening only on 127.0.0.1 on a
   free port (its Unix socket inside that directory), a user with a random password,
   stopped by its own PID and deleted at the end of the session. As root the server runs
   as the ``mysql`` system user, which owns the directory;
4. otherwise the tests are skipped, saying why, except under ``CI=true``, where a missing
   server fails them (CI installs it; a skip there would hide the backend).

Outside pytest, :func:`temporary_mariadb` is a context manager yielding the URL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["MariaDBUnavailable", "find_binaries", "mariadb_url", "temporary_mariadb"]

_SERVER_USER = "mysql"
_DATABASE = "chatkit_test"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0


class MariaDBUnavailable(Exception):
    """No MariaDB to test against; the message says why."""


def _find(name: str, bindir: str | None) -> str | None:
    for directory in ([bindir] if bindir else []) + ["/usr/sbin", "/usr/bin"]:
        path = Path(directory) / name
        if os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def find_binaries() -> tuple[str, str, str]:
    """Paths of ``mariadb-install-db``, ``mariadbd`` and ``mariadb-admin``.

    Raises :class:`MariaDBUnavailable` when they are missing (or ``CHATKIT_TEST_NO_MARIADB``).
    """
    if os.environ.get("CHATKIT_TEST_NO_MARIADB", "") not in ("", "0"):
        raise MariaDBUnavailable("MariaDB disabled by CHATKIT_TEST_NO_MARIADB")
    bindir = os.environ.get("CHATKIT_TEST_MARIADB_BINDIR")
    install = _find("mariadb-install-db", bindir) or _find("mysql_install_db", bindir)
    server = _find("mariadbd", bindir) or _find("mysqld", bindir)
    admin = _find("mariadb-admin", bindir) or _find("mysqladmin", bindir)
    if not (install and server and admin):
        raise MariaDBUnavailable(
            "MariaDB not available: set CHATKIT_TEST_MARIADB_URL to a database URL, or "
            "install the server (Debian: apt-get install mariadb-server)"
        )
    return install, server, admin


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _user_options(workdir: Path) -> tuple[dict[str, Any], int, int]:
    """``subprocess`` options that run a binary as the server user when we are root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}
    env.update(LC_ALL="C", HOME=str(workdir))
    options: dict[str, Any] = {"cwd": workdir, "env": env}
    uid = gid = -1
    if os.name == "posix" and os.geteuid() == 0:
        import pwd

        try:
            account = pwd.getpwnam(_SERVER_USER)
        except KeyError:
            raise MariaDBUnavailable(
                f"running as root and there is no {_SERVER_USER!r} user to run mariadbd as"
            ) from None
        uid, gid = account.pw_uid, account.pw_gid
        options.update(user=uid, group=gid, extra_groups=[])
    return options, uid, gid


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server by its own PID (SIGTERM: a clean shutdown); kill it if it hangs."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=_STOP_TIMEOUT)


@contextlib.contextmanager
def temporary_mariadb() -> Iterator[str]:
    """Start a throwaway MariaDB server; yield a ``mysql://`` URL to a fresh database.

    Raises :class:`MariaDBUnavailable` when there are no binaries to run, and
    ``RuntimeError`` (with the server's log) when they are there but fail.
    """
    install, server, admin = find_binaries()
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-mariadb-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        options, uid, gid = _user_options(workdir)
        if uid >= 0:
            os.chown(workdir, uid, gid)
        workdir.chmod(0o700)
        datadir, sock, log = workdir / "data", workdir / "mysqld.sock", workdir / "server.log"
        installed = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",  # no password until set below
                "--skip-test-db",
                *([f"--user={_SERVER_USER}"] if uid >= 0 else []),
            ],
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT,
            check=False,
            **options,
        )
        if installed.returncode != 0:
            raise RuntimeError(
                f"mariadb-install-db failed ({installed.returncode}):\n"
                f"{installed.stdout}\n{installed.stderr}".rstrip()
            )
        last_error = ""
        port = 0
        for _attempt in range(3):  # the free port may be taken before the server binds it
            port = _free_port()
            with log.open("ab") as log_file:
                process = subprocess.Popen(
                    [
                        server,
                        "--no-defaults",
                        f"--datadir={datadir}",
                        f"--socket={sock}",
                        f"--pid-file={workdir / 'mysqld.pid'}",
                        "--bind-address=127.0.0.1",
                        f"--port={port}",
                        "--skip-name-resolve",
                        "--innodb-flush-log-at-trx-commit=2",
                        "--innodb-doublewrite=0",
                        "--character-set-server=utf8mb4",
                        "--max-connections=200",
                        *([f"--user={_SERVER_USER}"] if uid >= 0 else []),
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal is ours, not its
                    **options,
                )
            deadline = time.monotonic() + _START_TIMEOUT
            ready = False
            while time.monotonic() < deadline and process.poll() is None:
                ping = subprocess.run(
                    [admin, "--no-defaults", f"--socket={sock}", "-uroot", "ping"],
                    capture_output=True,
                    text=True,
                    check=False,
                    **options,
                )
                if ping.returncode == 0:
                    ready = True
                    break
                time.sleep(0.1)
            if ready:
                break
            _stop(process)
            process = None
            last_error = log.read_text(errors="replace")
        else:
            raise RuntimeError(f"MariaDB did not start:\n{last_error}")

        password = secrets.token_hex(16)
        setup = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={sock}", "-uroot"],
            input=(
                f"CREATE DATABASE {_DATABASE} CHARACTER SET utf8mb4;"
                f"CREATE USER 'chatkit'@'127.0.0.1' IDENTIFIED BY '{password}';"
                # a throwaway server: tests may create databases of their own
                f"GRANT ALL ON *.* TO 'chatkit'@'127.0.0.1';"
                f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{secrets.token_hex(16)}';"
            ),
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT,
            check=False,
            **options,
        )
        if setup.returncode != 0:
            raise RuntimeError(f"creating the test database failed:\n{setup.stderr}")
        yield f"mysql://chatkit:{password}@127.0.0.1:{port}/{_DATABASE}"
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A ``mysql://`` URL for the session; a skip saying why there is none (a failure in CI)."""
    if os.environ.get("CHATKIT_TEST_NO_MARIADB", "") not in ("", "0"):
        pytest.skip("MariaDB disabled by CHATKIT_TEST_NO_MARIADB")
    if url := os.environ.get("CHATKIT_TEST_MARIADB_URL"):
        yield url
        return
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(temporary_mariadb())
        except MariaDBUnavailable as exc:
            if _ci():
                pytest.fail(f"CI=true and {exc}")
            pytest.skip(str(exc))
        yield url
