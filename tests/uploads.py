"""Uploads to a real server, and the RSS of the process serving them (from ``/proc``):
shared by the attachments RSS test and ``benchmarks/attachments.py``."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

MIB = 1024 * 1024
BOUNDARY = "rssboundary1234"


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
    """POST a multipart upload of *size* bytes (a reused 1 MiB block) to *path*;
    ``(status, body)`` of the response."""
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


def abandon(address: tuple[str, int], path: str, size: int, sent: int) -> None:
    """Start a multipart upload of *size* bytes, send *sent* of them, and leave (close)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = bytes(MIB)
    with socket.create_connection(address, timeout=30) as sock:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(head) + size + 64}\r\n\r\n"
        ).encode()
        sock.sendall(request + head)
        for _ in range(sent // MIB):
            sock.sendall(block)
        time.sleep(0.2)  # the server is now writing the part it received


def files_left(root: Path, timeout: float) -> list[Path]:
    """The files under *root* once none is left, or after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
