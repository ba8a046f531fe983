"""A tiny HTTP/1.1 client on a raw socket: exact control over reading and closing.

The real-server tests need what ordinary clients hide: read part of a stream then close
the socket (a real disconnect), stop reading with a small receive buffer (backpressure),
and timestamp every event as it arrives.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    at: float  # time.time() when it arrived
    data: dict[str, Any] | None  # None for a heartbeat comment
    raw: bytes = b""


@dataclass
class RawStream:
    sock: socket.socket
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    _buffer: bytes = b""
    _body: bytes = b""  # decoded body not yet parsed into events
    _chunked: bool = False
    _remaining: int | None = None  # content-length left, if any
    _ended: bool = False  # nothing more will arrive (end of body, EOF or reset)
    body_bytes: int = 0
    complete: bool = False  # the body's own framing ended it (last chunk, Content-Length)
    reset: bool = False  # the connection was reset (ECONNRESET): never a clean end

    def _recv(self, timeout: float | None) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionError:
            self.reset = self._ended = True
            return False
        if not data:
            self._ended = True
            # EOF ends a body delimited by the connection's close, and no other
            self.complete = not self._chunked and self._remaining is None and self.status > 0
            return False
        self._buffer += data
        return True

    def read_head(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._buffer:
            if self._ended or time.monotonic() > deadline:
                raise AssertionError(f"no response head; got {self._buffer[:200]!r}")
            self._recv(max(0.01, deadline - time.monotonic()))
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if "content-length" in self.headers:
            self._remaining = int(self.headers["content-length"])
        if self._ended and not self.reset:  # the server closed right after the response
            self.complete = not self._chunked and self._remaining is None
        self._decode()

    def _decode(self) -> None:
        if not self._chunked:
            take = self._buffer if self._remaining is None else self._buffer[: self._remaining]
            self._buffer = self._buffer[len(take) :]
            self._body += take
            self.body_bytes += len(take)
            if self._remaining is not None:
                self._remaining -= len(take)
                if self._remaining == 0:
                    self._ended = self.complete = True
            return
        while True:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self._buffer[:line_end].split(b";")[0], 16)
            if size == 0:
                self._ended = self.complete = True
                self._buffer = b""
                return
            if len(self._buffer) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            chunk = self._buffer[start : start + size]
            self._buffer = self._buffer[start + size + 2 :]
            self._body += chunk
            self.body_bytes += len(chunk)

    def events(self, timeout: float = 10.0) -> list[Event]:
        """Wait (up to *timeout*) for at least one complete event; return those ready."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._parse()
            if found or self._ended:
                return found
            if time.monotonic() > deadline:
                return []
            if self._recv(max(0.001, deadline - time.monotonic())):
                self._decode()

    def _parse(self) -> list[Event]:
        out = []
        now = time.time()
        while b"\n\n" in self._body:
            block, self._body = self._body.split(b"\n\n", 1)
            if block.startswith(b"data: "):
                out.append(Event(now, json.loads(block[6:]), block))
            elif block.startswith(b":"):
                out.append(Event(now, None, block))
        return out

    @property
    def ended(self) -> bool:
        return self._ended and b"\n\n" not in self._body

    def read_all(self, timeout: float = 30.0) -> list[Event]:
        """Every event up to the end of the body; a reset or a body cut short (no last
        chunk, fewer bytes than Content-Length) is an ``AssertionError``, not an end."""
        collected: list[Event] = []
        deadline = time.monotonic() + timeout
        while not self.ended:
            if time.monotonic() > deadline:
                raise AssertionError("stream did not end in time")
            collected += self.events(max(0.01, deadline - time.monotonic()))
        self.check_complete()
        return collected

    def check_complete(self) -> None:
        if not self.complete:
            raise AssertionError(
                f"the response ended without its end of body (reset={self.reset}, "
                f"chunked={self._chunked}, {self.body_bytes} body bytes)"
            )

    def close(self) -> float:
        """Close the socket (a FIN, like a browser's abort); returns ``time.time()``."""
        self.sock.close()
        return time.time()


def open_stream(
    address: tuple[str, int],
    body: bytes,
    path: str = "/chatkit",
    rcvbuf: int | None = None,
    headers: dict[str, str] | None = None,
) -> RawStream:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(address)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {address[0]}:{address[1]}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    stream = RawStream(sock)
    return stream


def request(
    address: tuple[str, int],
    body: bytes,
    path: str = "/chatkit",
    headers: dict[str, str] | None = None,
) -> RawStream:
    """A complete request: head read, body read to its end (a reset or a cut-short body is
    an ``AssertionError``)."""
    stream = open_stream(address, body, path, headers=headers)
    stream.read_head()
    deadline = time.monotonic() + 30
    while not stream._ended and time.monotonic() < deadline:
        if stream._recv(1.0):
            stream._decode()
    stream.close()
    stream.check_complete()
    return stream


def parse_response(data: bytes) -> tuple[int, bytes]:
    """Status and (dechunked) body of one whole HTTP/1.1 response read from a socket; a
    chunked body must end with its last chunk."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    chunked = any(
        name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower()
        for name, _, value in (line.partition(b":") for line in header_lines)
    )
    if not chunked:
        return status, body
    decoded = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        decoded += rest[:size]
        body = rest[size + 2 :]
    else:
        raise AssertionError("chunked body did not end with its last chunk")
    return status, bytes(decoded)
