"""The memory bound of uploads under real servers: a 200 MiB upload through
``chatkit_routes`` raises the server process's RSS by less than 8 MiB, on every adapter.

One upload per adapter, under its first real server (a subprocess); the RSS is read from
``/proc`` (the worker's, under gunicorn) while the client streams the body from a reused
1 MiB buffer. A memory bound, not a timing one.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import MEASUREMENTS
from tests.realserver import real_server_params, start_server

MIB = 1024 * 1024
UPLOAD = 200 * MIB
BOUND = 8 * MIB
BOUNDARY = "rssboundary1234"

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def rss(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def serving_pid(pid: int) -> int:
    """The process that serves requests: the only worker of a pre-fork master (gunicorn)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if len(children) == 1 else pid


def upload(address: tuple[str, int], path: str, size: int) -> tuple[int, bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    block = bytes(range(256)) * (MIB // 256)
    with socket.create_connection(address, timeout=120) as sock:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n"
        ).encode()
        sock.sendall(request + head)
        for _ in range(size // MIB):
            sock.sendall(block)
        sock.sendall(tail)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.005)


@pytest.mark.realserver
@pytest.mark.parametrize("target", real_server_params(first_only=True))
def test_200_mib_upload_rss_growth(target: tuple[str, str], tmp_path: Path) -> None:
    adapter, server = target
    files = tmp_path / "files"
    env = {"CHATKIT_TEST_ATTACHMENTS": str(files)}
    running = start_server(adapter, server, tmp_path, variant="routes", env=env)
    try:
        path = "/chatkit/attachments" + ("/" if adapter.startswith("django") else "")
        status, body = upload(running.address, path, MIB)  # warm-up: imports, first buffers
        assert status == 200, body[:300]
        pid = serving_pid(running.process.pid)
        before, hwm_before = rss(pid), rss(pid, "VmHWM")
        sampler = Sampler(pid)
        sampler.start()
        status, body = upload(running.address, path, UPLOAD)
        sampler.done.set()
        sampler.join()
        hwm_after = rss(pid, "VmHWM")
        assert status == 200, body[:300]
        peak = max(sampler.peak, hwm_after if hwm_after > hwm_before else 0)
        growth = peak - before
        MEASUREMENTS.append(
            f"attachments RSS {adapter}/{server}: +{growth / MIB:.1f} MiB for a 200 MiB upload"
        )
        stored = sorted(files.glob("*/meta.json"))
        assert len(stored) == 2
        sizes = sorted(json.loads(p.read_text())["size"] for p in stored)
        assert sizes == [MIB, UPLOAD]
        assert growth < BOUND, f"RSS grew by {growth / MIB:.1f} MiB"
    finally:
        running.stop()
