"""Upload throughput and memory of ``chatkit_routes`` vs a hand-written upload route.

``python -m benchmarks.attachments [--size-mib 100] [--repeats 3] [--only NAME ...]``

For each adapter (under its first real server) the same multipart upload goes to
``P/attachments`` (``chatkit_routes`` on an ``Attachments`` directory: streamed, sniffed,
limited, committed atomically), and, for Starlette and Flask, in the same run to the route
people write by hand (Starlette ``await request.form()`` then copying the spooled file;
Flask ``request.files["file"].save()``), on the same server. Prints MB/s (median of the
repeats) and the RSS growth of the serving process during each upload (median, max). Benchmarks, not
tests: nothing is asserted.

``--s3`` adds, in the same run, object storage (a SeaweedFS the run starts, as the tests
do): the same upload through the app into the bucket, the same bytes PUT straight to the
bucket with a presigned URL (``direct_uploads``), and the latency of a content request
answered by a redirect to the bucket (then followed) vs the file backend streaming it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.realserver import (
    SERVERS,
    answers_http,
    free_port,
    real_server_params,
    spawn,
    start_server,
    stop,
    wait_ready,
)
from tests.uploads import MIB, Sampler, rss, serving_pid, upload

HAND_WRITTEN = {"starlette": "uvicorn", "flask": "gunicorn-gthread"}
OCTET = "application/octet-stream"


# -- the hand-written routes (served by the same servers) ---------------------------------


def _destination() -> Path:
    return Path(os.environ["BENCH_UPLOAD_DIR"]) / uuid.uuid4().hex


def starlette_app() -> Any:
    """``await request.form()`` and copy the spooled file: the usual Starlette route."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def upload_route(request: Request) -> JSONResponse:
        form = await request.form()
        file: Any = form["file"]
        destination = _destination()
        with destination.open("wb") as out:
            while chunk := await file.read(MIB):
                out.write(chunk)
        await form.close()
        return JSONResponse({"id": destination.name})

    return Starlette(routes=[Route("/chatkit/attachments", upload_route, methods=["POST"])])


def flask_app() -> Any:
    """``request.files["file"].save(path)``: the usual Flask route."""
    import flask

    app = flask.Flask(__name__)

    @app.post("/chatkit/attachments")
    def upload_route() -> Any:
        destination = _destination()
        flask.request.files["file"].save(destination)
        return {"id": destination.name}

    return app


def _hand_command(adapter: str, port: int) -> list[str]:
    command = SERVERS[HAND_WRITTEN[adapter]](port)
    factory = f"benchmarks.attachments:{adapter}_app"
    return [arg.replace("tests.apps:app", factory) for arg in command]


# -- measuring ----------------------------------------------------------------------------


def measure(
    address: tuple[str, int], pid: int, path: str, size: int, repeats: int
) -> dict[str, Any]:
    status, body = upload(address, path, MIB)  # warm-up
    if status != 200:
        raise RuntimeError(f"warm-up upload answered {status}: {body[:200]!r}")
    worker = serving_pid(pid)
    rates, growths = [], []
    for _ in range(repeats):
        before = rss(worker)
        sampler = Sampler(worker)
        sampler.start()
        started = time.perf_counter()
        status, body = upload(address, path, size)
        elapsed = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        if status != 200:
            raise RuntimeError(f"upload answered {status}: {body[:200]!r}")
        rates.append(size / MIB / elapsed)
        growths.append((sampler.peak - before) / MIB)
    return {
        "mib_s": statistics.median(rates),
        "rss_growth_mib": statistics.median(growths),
        "rss_growth_max_mib": max(growths),
    }


def run(size: int, repeats: int, only: list[str]) -> list[dict[str, Any]]:
    rows = []
    for param in real_server_params(first_only=True):
        adapter, server = param.values[0]
        if only and adapter not in only:
            continue
        with tempfile.TemporaryDirectory(prefix="bench-attach-") as workdir:
            files = Path(workdir) / "files"
            env = {"CHATKIT_TEST_ATTACHMENTS": str(files)}
            running = start_server(adapter, server, Path(workdir), variant="routes", env=env)
            path = "/chatkit/attachments" + ("/" if adapter.startswith("django") else "")
            try:
                row = {"adapter": adapter, "server": server, "route": "chatkit_routes"}
                row.update(measure(running.address, running.process.pid, path, size, repeats))
            finally:
                running.stop()
            rows.append(row)
            print(_line(row), file=sys.stderr, flush=True)
            if adapter in HAND_WRITTEN:
                rows.append(hand_written(adapter, Path(workdir), size, repeats))
                print(_line(rows[-1]), file=sys.stderr, flush=True)
    return rows


def hand_written(adapter: str, workdir: Path, size: int, repeats: int) -> dict[str, Any]:
    uploads = workdir / "hand"
    uploads.mkdir()
    port = free_port()
    log = workdir / "hand.log"
    process = spawn(_hand_command(adapter, port), log, {"BENCH_UPLOAD_DIR": str(uploads)})
    try:
        wait_ready(process, answers_http(("127.0.0.1", port)), log)
        row = {"adapter": adapter, "server": HAND_WRITTEN[adapter], "route": "hand-written"}
        row.update(measure(("127.0.0.1", port), process.pid, "/chatkit/attachments", size, repeats))
        return row
    finally:
        stop(process)


def s3_rows(size: int, repeats: int, adapter: str = "starlette") -> list[dict[str, Any]]:
    """Upload through the app into S3, straight to the bucket, and content latency."""
    import httpx

    from chatkit_adapters._sigv4 import Credentials, presign
    from tests.s3server import temporary_s3

    server_name = dict(real_server_params_first())[adapter]
    rows: list[dict[str, Any]] = []
    with temporary_s3() as s3, tempfile.TemporaryDirectory(prefix="bench-s3-") as workdir:
        prefix = f"bench-{uuid.uuid4().hex}"
        env = {"CHATKIT_TEST_ATTACHMENTS": s3.url(prefix), **s3.environ()}
        running = start_server(adapter, server_name, Path(workdir), variant="routes", env=env)
        try:
            row = {"adapter": adapter, "server": server_name, "route": "chatkit_routes->s3"}
            row.update(
                measure(running.address, running.process.pid, "/chatkit/attachments", size, repeats)
            )
            rows.append(row)
            print(_line(row), file=sys.stderr, flush=True)
            credentials = Credentials(s3.access_key, s3.secret_key, s3.region)
            block = bytes(range(256)) * (MIB // 256)
            rates = []
            with httpx.Client(timeout=120) as client:
                for index in range(repeats):
                    url = presign(
                        "PUT", s3.endpoint, s3.bucket, f"{prefix}/direct{index}.bin",
                        credentials, expires=600,
                        headers={"content-length": str(size), "content-type": OCTET},
                    )  # fmt: skip
                    started = time.perf_counter()
                    answer = client.put(
                        url,
                        content=(block for _ in range(size // MIB)),
                        headers={"content-length": str(size), "content-type": OCTET},
                    )  # fmt: skip
                    if answer.status_code != 200:
                        raise RuntimeError(f"presigned PUT answered {answer.status_code}")
                    rates.append(size / MIB / (time.perf_counter() - started))
            rows.append(
                {"adapter": "(client)", "server": "seaweedfs", "route": "presigned PUT",
                 "mib_s": statistics.median(rates), "rss_growth_mib": 0.0,
                 "rss_growth_max_mib": 0.0}
            )  # fmt: skip
            print(_line(rows[-1]), file=sys.stderr, flush=True)
            rows.append(content_latency(running.address, "s3 redirect + bucket GET"))
        finally:
            running.stop()
        files = Path(workdir) / "files"
        env = {"CHATKIT_TEST_ATTACHMENTS": str(files)}
        running = start_server(adapter, server_name, Path(workdir), variant="routes", env=env)
        try:
            rows.append(content_latency(running.address, "file, through the app"))
        finally:
            running.stop()
    return rows


def real_server_params_first() -> list[tuple[str, str]]:
    return [tuple(p.values[0]) for p in real_server_params(first_only=True)]  # type: ignore[misc]


def content_latency(address: tuple[str, int], route: str, count: int = 30) -> dict[str, Any]:
    """Median ms of a content GET of a 1 MiB attachment, following a redirect if any."""
    import httpx

    status, body = upload(address, "/chatkit/attachments", MIB)
    if status != 200:
        raise RuntimeError(f"upload answered {status}")
    attachment_id = json.loads(body)["id"]
    base = f"http://{address[0]}:{address[1]}"
    times = []
    with httpx.Client(timeout=60, follow_redirects=True) as client:
        for _ in range(count):
            started = time.perf_counter()
            answer = client.get(f"{base}/chatkit/attachments/{attachment_id}/content")
            if answer.status_code != 200 or len(answer.content) != MIB:
                raise RuntimeError(f"content answered {answer.status_code}")
            times.append((time.perf_counter() - started) * 1000)
    row = {"adapter": "content", "server": "", "route": route, "ms": statistics.median(times)}
    print(f"content GET of 1 MiB, {route:<28} {row['ms']:7.1f} ms (median of {count})",
          file=sys.stderr, flush=True)  # fmt: skip
    return row


def _line(row: dict[str, Any]) -> str:
    if "ms" in row:
        return f"content GET of 1 MiB, {row['route']:<28} {row['ms']:7.1f} ms"
    return (
        f"{row['adapter'] + '@' + row['server']:<30} {row['route']:<15} "
        f"{row['mib_s']:8.1f} MiB/s   RSS per upload +{row['rss_growth_mib']:.1f} MiB"
        f" (max +{row['rss_growth_max_mib']:.1f})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attachments", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=100, help="upload size (default 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], metavar="ADAPTER")
    parser.add_argument("--s3", action="store_true", help="add object storage (SeaweedFS)")
    parser.add_argument("--s3-only", action="store_true", help="only the object storage rows")
    args = parser.parse_args(argv)
    rows = [] if args.s3_only else run(args.size_mib * MIB, args.repeats, args.only)
    if args.s3 or args.s3_only:
        rows += s3_rows(args.size_mib * MIB, args.repeats)
    print(f"upload of {args.size_mib} MiB, median of {args.repeats}; server RSS growth per upload")
    for row in rows:
        print(_line(row))
    by_key = {(r["adapter"], r["route"]): r for r in rows}
    for adapter in HAND_WRITTEN:
        ours, hand = by_key.get((adapter, "chatkit_routes")), by_key.get((adapter, "hand-written"))
        if ours and hand:
            print(
                f"{adapter}: chatkit_routes / hand-written = {ours['mib_s'] / hand['mib_s']:.2f}x"
            )


if __name__ == "__main__":
    main()
