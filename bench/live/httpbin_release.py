"""httpbin (PyPI) as the releases of `bench/live.py`, a WSGI middleware chosen by the version's name.

gunicorn loads it as `httpbin_release:app("<version>")`. The version's name says what the release does:

* `plus40ms…`: every request waits 40 ms before httpbin answers it (a sleep in the worker thread, so
  run gunicorn with threads: `-k gthread --threads N`);
* `errors5pct…`: 5% of requests, drawn at random, answer 500 instead of reaching httpbin;
* anything else: httpbin itself, untouched, so two such versions are identical releases.

The health path (`/status/200`, which `bench/live.py` gives fm as `health_path`) is never slowed down or
failed: as with most bad releases, the instance looks healthy and only its traffic shows the fault.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from httpbin import app as httpbin_app

HEALTH_PATH = "/status/200"
ERROR_SHARE = 0.05
DELAY_S = 0.040

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def failing(inner: WsgiApp, share: float) -> WsgiApp:
    """`inner`, except that a random `share` of requests (the health path aside) answer 500."""
    draw = random.Random()

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != HEALTH_PATH and draw.random() < share:
            body = b"injected failure\n"
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return inner(environ, start_response)

    return application


def delayed(inner: WsgiApp, delay_s: float) -> WsgiApp:
    """`inner`, each request (the health path aside) answered `delay_s` later."""

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != HEALTH_PATH:
            time.sleep(delay_s)
        return inner(environ, start_response)

    return application


def app(version: str) -> WsgiApp:
    """The WSGI application of release `version`."""
    if version.startswith("plus40ms"):
        return delayed(httpbin_app, DELAY_S)
    if version.startswith("errors5pct"):
        return failing(httpbin_app, ERROR_SHARE)
    return httpbin_app  # type: ignore[no-any-return]
