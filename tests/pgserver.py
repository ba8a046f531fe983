"""A throwaway PostgreSQL server for tests, and the session fixture ``postgres_url``.

Where the URL comes from, in order:

1. ``CHATKIT_TEST_NO_POSTGRES=1``: no PostgreSQL, tests that need it are skipped (this is
   also how to check that the suite skips cleanly without it), also under ``CI=true``;
2. ``CHATKIT_TEST_POSTGRES_URL``: an existing database, used as is (tests must keep to
   their own rows, as it is not emptied);
3. PostgreSQL's server binaries (Debian's ``/usr/lib/postgresql/<version>/bin``, or
   ``initdb``/``postgres``/``pg_isready`` on ``PATH``, or ``CHATKIT_TEST_PG_BINDIR``): a new
   cluster in a temporary directory, listening only on 127.0.0.1 on a free port (its Unix
   socket inside that directory), with a random password, stopped by its own PID and
   deleted at the end of the session. initdb refuses to run as root, so as root the
   binaries run as the ``postgres`` system user, which owns the directory;
4. otherwise the tests are skipped, saying why; under ``CI=true`` they fail instead
   (``tests.needs``: CI installs PostgreSQL, so its absence is a broken install).

Use it with ``from tests.pgserver import postgres_url`` in a conftest or test module, or
``pytest -p tests.pgserver``. Outside pytest, :func:`temporary_postgres` is a context
manager yielding the URL.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.needs import missing, opted_out

__all__ = ["PostgresUnavailable", "find_bindir", "postgres_url", "temporary_postgres"]

_SERVER_USER = "postgres"
_DATABASE = "chatkit_test"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0


class PostgresUnavailable(Exception):
    """No PostgreSQL to test against; the message says why (used as the skip reason)."""


def _version_key(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``pg_isready``, newest first.

    Raises :class:`PostgresUnavailable` when there is none (or ``CHATKIT_TEST_NO_POSTGRES``).
    """
    if os.environ.get("CHATKIT_TEST_NO_POSTGRES", "") not in ("", "0"):
        raise PostgresUnavailable("PostgreSQL disabled by CHATKIT_TEST_NO_POSTGRES")
    candidates: list[str] = []
    if explicit := os.environ.get("CHATKIT_TEST_PG_BINDIR"):
        candidates.append(explicit)
    debian = [str(Path(p).parent) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    candidates += sorted(debian, key=_version_key, reverse=True)
    if on_path := shutil.which("initdb"):
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        bindir = Path(candidate)
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres", "pg_isready")):
            return bindir
    raise PostgresUnavailable(
        "PostgreSQL not available: set CHATKIT_TEST_POSTGRES_URL to a database URL, or "
        "install the server (Debian: apt-get install postgresql) so that "
        "/usr/lib/postgresql/*/bin/initdb exists"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Runner:
    """Runs the PostgreSQL binaries, as the ``postgres`` user when we are root."""

    bindir: Path
    workdir: Path

    def __post_init__(self) -> None:
        self.as_root = os.name == "posix" and os.geteuid() == 0
        if self.as_root:
            import pwd

            try:
                account = pwd.getpwnam(_SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and there is no {_SERVER_USER!r} user to run initdb as"
                ) from None
            self.uid, self.gid = account.pw_uid, account.pw_gid

    def options(self) -> dict[str, Any]:
        """``subprocess`` options: drop to the server user (no wrapper process, so the
        child's PID is the server's own)."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PG") and key not in ("HOME", "USER", "LOGNAME")
        }
        env.update(LC_ALL="C", HOME=str(self.workdir))
        options: dict[str, Any] = {"cwd": self.workdir, "env": env}
        if self.as_root:
            options.update(user=self.uid, group=self.gid, extra_groups=[])
        return options

    def run(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / name), *args],
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT,
            check=False,
            **self.options(),
        )

    def chown(self, path: Path) -> None:
        if self.as_root:
            os.chown(path, self.uid, self.gid)


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}".rstrip()
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown of the postmaster by its own PID; kill it if it does not stop."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if os.name == "posix":
            os.kill(process.pid, signal.SIGINT)  # "fast" shutdown: disconnect clients, stop
        else:
            process.terminate()
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=_STOP_TIMEOUT)


@contextlib.contextmanager
def temporary_postgres(bindir: Path | None = None) -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster; yield a ``postgresql://`` URL to a fresh database.

    Raises :class:`PostgresUnavailable` when there are no binaries to run, and
    ``RuntimeError`` (with the server's log) when they are there but fail.
    """
    bindir = bindir or find_bindir()
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-pg-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        runner = _Runner(bindir, workdir)
        runner.chown(workdir)
        workdir.chmod(0o700)
        datadir, sockets, log = workdir / "data", workdir / "sockets", workdir / "server.log"
        password = secrets.token_hex(16)
        pwfile = workdir / "pwfile"
        pwfile.write_text(password + "\n")
        sockets.mkdir()
        for path in (pwfile, sockets):
            runner.chown(path)

        try:  # can the server user run the binaries in its directory at all?
            _check(runner.run("pg_isready", "--version"), f"{bindir}/pg_isready --version")
        except OSError as exc:
            raise RuntimeError(
                f"cannot run {bindir}/pg_isready in {workdir}"
                f"{f' as {_SERVER_USER!r}' if runner.as_root else ''}: {exc}"
            ) from exc
        _check(
            runner.run(
                "initdb",
                "--pgdata",
                str(datadir),
                "--username",
                _SERVER_USER,
                "--pwfile",
                str(pwfile),
                "--auth-host",
                "scram-sha-256",
                "--auth-local",
                "trust",  # the socket directory is private to the server user
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ),
            "initdb",
        )
        pwfile.unlink()

        last_error = ""
        for _attempt in range(3):  # the free port may be taken before the server binds it
            port = _free_port()
            with log.open("ab") as log_file:
                process = subprocess.Popen(
                    [
                        str(bindir / "postgres"),
                        "-D",
                        str(datadir),
                        "-p",
                        str(port),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"unix_socket_directories={sockets}",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=100",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal is ours, not its
                    **runner.options(),
                )
            deadline = time.monotonic() + _START_TIMEOUT
            ready = False
            while time.monotonic() < deadline and process.poll() is None:
                status = runner.run(
                    "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", _SERVER_USER
                )
                if status.returncode == 0:
                    ready = True
                    break
                time.sleep(0.1)
            if ready:
                break
            _stop(process)
            process = None
            last_error = log.read_text(errors="replace")
        else:
            raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")

        _check(
            runner.run(
                "createdb", "-h", str(sockets), "-p", str(port), "-U", _SERVER_USER, _DATABASE
            )
            if (bindir / "createdb").exists()
            else runner.run(
                "psql",
                *("-h", str(sockets), "-p", str(port), "-U", _SERVER_USER, "-d", "postgres"),
                *("-c", f"CREATE DATABASE {_DATABASE}"),
            ),
            "createdb",
        )
        yield f"postgresql://{_SERVER_USER}:{password}@127.0.0.1:{port}/{_DATABASE}"
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL for the whole test session, or a skip saying why there is none
    (a failure under ``CI=true``, unless ``CHATKIT_TEST_NO_POSTGRES`` is set)."""
    if opted_out("CHATKIT_TEST_NO_POSTGRES"):
        missing("PostgreSQL disabled", "CHATKIT_TEST_NO_POSTGRES")
    if url := os.environ.get("CHATKIT_TEST_POSTGRES_URL"):
        yield url
        return
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(temporary_postgres())
        except PostgresUnavailable as exc:
            missing(str(exc), "CHATKIT_TEST_NO_POSTGRES")
        yield url
