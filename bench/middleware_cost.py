"""What a request-context middleware adds per request, for asgi_middleware.py and
wsgi_middleware.py: the same application with and without it, taking turns round after round
(a shared machine drifts), and the medians of per-round CPU time per request."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

Requests = Callable[[int], None]  # serves that many requests, numbered from 0


def cpu_per_request(serve: Requests, count: int) -> float:
    started = time.process_time()
    serve(count)
    return (time.process_time() - started) / count


def compare(middleware: str, variants: dict[str, Requests], rounds: int, count: int) -> None:
    """`variants`: "without" and "with" the middleware."""
    per_request: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, serve in variants.items():
            per_request[name].append(cpu_per_request(serve, count))
    medians = {name: statistics.median(times) * 1e6 for name, times in per_request.items()}
    print(f"rounds {rounds} x {count} requests, median CPU per request:")
    for name, us in medians.items():
        print(f"  {name} {middleware}: {us:.1f} us")
    print(f"  added by the middleware: {medians['with'] - medians['without']:.1f} us")


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--requests", type=int, default=5000)
    return parser.parse_args()
