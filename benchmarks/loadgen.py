"""Request-throughput load generator, always in its own process.

:func:`run` uses ``wrk`` (Debian: ``apt-get install -y wrk``; a Lua script sets the POST
body) when it is on ``PATH``, else this module's asyncio client on raw sockets, run as
``python -m benchmarks.loadgen HOST PORT BODY_FILE --connections 16 --duration 5``.
Either way every connection is keep-alive and sends its next request as soon as the
previous response is complete. The generator's own CPU time is reported (from
``wait4``), so a table can show it was not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.realserver import ROOT

PATH = "/chatkit"


def available() -> str:
    """``wrk`` if installed, else ``python-asyncio``."""
    return "wrk" if shutil.which("wrk") else "python-asyncio"


def _run_child(command: list[str], timeout: float) -> tuple[str, float]:
    """Run *command*; return its stdout and its CPU seconds (user+system, via wait4)."""
    with tempfile.TemporaryFile() as out:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}): {text[-2000:]}")
    return text, usage.ru_utime + usage.ru_stime


_UNITS = {"k": 1e3, "M": 1e6, "G": 1e9}


def _number(text: str) -> float:
    if text and text[-1] in _UNITS:
        return float(text[:-1]) * _UNITS[text[-1]]
    return float(text)


def run_wrk(
    address: tuple[str, int], body: bytes, connections: int, duration: float, threads: int = 1
) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        escaped = body.decode().replace("\\", "\\\\").replace('"', '\\"')
        script.write(
            'wrk.method = "POST"\n'
            f'wrk.body = "{escaped}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    try:
        seconds = max(1, round(duration))
        command = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            script.name,
            f"http://{address[0]}:{address[1]}{PATH}",
        ]
        text, cpu = _run_child(command, timeout=seconds + 30)
    finally:
        Path(script.name).unlink()
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
    if not match:
        raise RuntimeError(f"cannot parse wrk output: {text}")
    requests = int(match.group(1))
    elapsed = float(match.group(2)) / (1000 if match.group(3) == "ms" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    latency = re.search(r"Latency\s+([\d.]+)(us|ms|s)", text)
    mean_ms = None
    if latency:
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[latency.group(2)]
        mean_ms = float(latency.group(1)) * scale
    return {
        "tool": "wrk",
        "requests": requests,
        "seconds": elapsed,
        "rps": requests / elapsed if elapsed else 0.0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "mean_latency_ms": mean_ms,
        "cpu_seconds": cpu,
    }


def run_python(address: tuple[str, int], body: bytes, connections: int, duration: float) -> dict:
    with tempfile.NamedTemporaryFile("wb", delete=False) as body_file:
        body_file.write(body)
    try:
        command = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            address[0],
            str(address[1]),
            body_file.name,
            "--connections",
            str(connections),
            "--duration",
            str(duration),
        ]
        text, cpu = _run_child(command, timeout=duration + 60)
    finally:
        Path(body_file.name).unlink()
    result = json.loads(text.strip().splitlines()[-1])
    result["cpu_seconds"] = cpu
    return result


def run(
    address: tuple[str, int],
    body: bytes,
    connections: int,
    duration: float,
    tool: str | None = None,
) -> dict:
    """Load *address* with POST *body* for *duration* s on *connections* keep-alive sockets."""
    tool = tool or available()
    if tool == "wrk":
        return run_wrk(address, body, connections, duration)
    return run_python(address, body, connections, duration)


# -- the asyncio raw-socket generator (python -m benchmarks.loadgen) ------------------------


class _Counts:
    requests = 0
    non_2xx = 0
    errors = 0
    latency_total = 0.0


async def _connection(
    host: str, port: int, request: bytes, deadline: float, counts: _Counts
) -> None:
    loop = asyncio.get_running_loop()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while loop.time() < deadline:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                counts.errors += 1
                await asyncio.sleep(0.01)
                continue
        assert reader is not None
        started = loop.time()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            close = b"connection: close" in lower
            length_at = lower.find(b"content-length:")
            if length_at >= 0:
                end = lower.find(b"\r\n", length_at)
                await reader.readexactly(int(lower[length_at + 15 : end]))
            elif b"chunked" in lower:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await reader.read()
                close = True
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            counts.errors += 1
            writer.close()
            writer = None
            continue
        counts.requests += 1
        counts.latency_total += loop.time() - started
        if not 200 <= status < 300:
            counts.non_2xx += 1
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _load(host: str, port: int, body: bytes, connections: int, duration: float) -> dict:
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    counts = _Counts()
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + duration
    await asyncio.gather(
        *(_connection(host, port, request, deadline, counts) for _ in range(connections))
    )
    elapsed = loop.time() - started
    return {
        "tool": "python-asyncio",
        "requests": counts.requests,
        "seconds": elapsed,
        "rps": counts.requests / elapsed,
        "non_2xx": counts.non_2xx,
        "socket_errors": counts.errors,
        "mean_latency_ms": counts.latency_total / max(counts.requests, 1) * 1000,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("body_file")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    body = Path(args.body_file).read_bytes()
    result = asyncio.run(_load(args.host, args.port, body, args.connections, args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
