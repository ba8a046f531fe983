"""Side-by-side benchmarks of every chatkit-adapters adapter x server: one run, one table.

``python -m benchmarks [--quick] [--only NAME ...]``

Measures every adapter x server row (discovered from ``tests.http_clients.CLIENTS`` and
each client's ``real_servers``), the documented FastAPI wiring as the reference, each
framework's hand-written route and the in-process limit, on this machine, one after the
other. Prints the table to stdout (progress goes to stderr) and writes
``benchmarks/results/results.json`` and ``benchmarks/results/throughput.png``.
Benchmarks, not tests: nothing is asserted, but the exit status is 1 when a figure could
not be measured (each is listed, after the table).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from benchmarks.harness import Config, run
from benchmarks.report import finish

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> tuple[Config, Path, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (smaller sizes)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="rows whose adapter, server or ADAPTER@SERVER label matches (shell wildcards; "
        "repeatable), e.g. --only flask, --only uvicorn, --only 'asgi@uvicorn'",
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="ADAPTER@SERVER",
        help="also measure a combination the client's real_servers leave out "
        "(e.g. flask@gunicorn-gthread); repeatable",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--no-plot", action="store_true", help="skip throughput.png")
    parser.add_argument("--loadgen", choices=["wrk", "python-asyncio"], help="force one")
    sizes = parser.add_argument_group("sizes (override the defaults of the mode)")
    sizes.add_argument("--deltas", type=int, help="deltas of the stream-throughput stream")
    sizes.add_argument(
        "--duration", type=float, help="seconds per request-throughput round and side"
    )
    sizes.add_argument("--connections", type=int, help="keep-alive connections for it")
    sizes.add_argument("--repeats", type=int, help="TTFE and active-disconnect repeats")
    sizes.add_argument("--streams", type=int, help="streams open at once for the memory figure")
    sizes.add_argument("--paced-streams", type=int, help="concurrent paced streams")
    sizes.add_argument("--paced-seconds", type=float, help="length of each paced stream")
    args = parser.parse_args(argv)

    overrides = {}
    if args.deltas is not None:
        overrides["deltas"] = args.deltas
    if args.duration is not None:
        overrides["duration"] = args.duration
        overrides["warmup_duration"] = 0.0 if args.duration < 2 else 1.0
    if args.connections is not None:
        overrides["connections"] = args.connections
    if args.repeats is not None:
        overrides["ttfe_repeats"] = args.repeats
        overrides["cancel_repeats"] = args.repeats
        overrides["reference_cancel_repeats"] = args.repeats
        overrides["idle_repeats"] = max(1, args.repeats // 2)
    if args.streams is not None:
        overrides["async_streams"] = args.streams
        overrides["wsgi_streams"] = min(args.streams, 32)
    if args.paced_streams is not None:
        overrides["paced_streams"] = args.paced_streams
    if args.paced_seconds is not None:
        overrides["paced_seconds"] = args.paced_seconds
    overrides["only"] = args.only
    overrides["also"] = args.also
    overrides["loadgen"] = args.loadgen
    config = Config.quick_config(**overrides) if args.quick else Config(**overrides)
    return config, args.out, not args.no_plot


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the harness, which stops every server


def main(argv: list[str] | None = None) -> int:
    config, out, make_plot = parse(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    document = run(config)
    print(finish(document, out, make_plot))
    return 1 if document["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
