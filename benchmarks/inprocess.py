"""The in-process limit: ``server.process(...)`` iterated with no HTTP at all.

Runs in its own long-lived process (``python -m benchmarks.inprocess``) with the same
ScriptedServer and JournalStore the servers use (``write_delay=0``, journaling to a
file), so the harness can measure it between the rows' HTTP runs (paired, the machine's
load drifts). Reads commands on stdin, answers one JSON line each:

- ``stream N``: events/s of one N-delta ``threads.create`` stream, first event to last,
  as the HTTP client counts;
- ``requests N``: ``threads.get_by_id`` calls per second, N calls in a row.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chatkit.server import NonStreamingResult, StreamingResult

from tests.chatkit_app import create_thread, get_thread, make_server
from tests.realserver import ROOT


async def stream_rate(server: Any, deltas: int) -> dict[str, Any]:
    result = await server.process(create_thread(f"deltas={deltas}"), {})
    assert isinstance(result, StreamingResult)
    events = 0
    first = 0.0
    thread_id = ""
    cpu = time.process_time()
    async for chunk in result:
        if events == 0:
            first = time.perf_counter()
            thread_id = json.loads(chunk[6:])["thread"]["id"]
        events += 1
    seconds = time.perf_counter() - first
    cpu = time.process_time() - cpu
    return {
        "events": events,
        "events_per_s": events / seconds,
        "cpu_us_per_event": cpu / events * 1e6,
        "thread_id": thread_id,
    }


async def request_rate(server: Any, thread_id: str, count: int) -> dict[str, Any]:
    body = get_thread(thread_id)
    started = time.perf_counter()
    cpu = time.process_time()
    for _ in range(count):
        result = await server.process(body, {})
        assert isinstance(result, NonStreamingResult)
    return {
        "requests": count,
        "rps": count / (time.perf_counter() - started),
        "cpu_ms_per_request": (time.process_time() - cpu) / count * 1000,
    }


async def serve() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        server = make_server(write_delay=0.0, journal=str(Path(workdir) / "journal.jsonl"))
        warm = await stream_rate(server, 200)
        thread_id = warm["thread_id"]
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                return
            command, count = line.split()
            if command == "stream":
                answer = await stream_rate(server, int(count))
            else:
                answer = await request_rate(server, thread_id, int(count))
            print(json.dumps(answer), flush=True)


class InProcess:
    """The harness's handle on the in-process subprocess."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.inprocess"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._ready = False  # it starts while the servers start; first ask() waits

    def _wait_ready(self) -> None:
        if not self._ready:
            self._answer()
            self._ready = True

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the in-process benchmark process died")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, command: str, count: int) -> dict[str, Any]:
        self._wait_ready()
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command} {count}\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


if __name__ == "__main__":
    asyncio.run(serve())
