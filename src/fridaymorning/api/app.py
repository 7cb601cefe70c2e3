"""The HTTP API: reads go to the controllers and stores, changes go through the controllers only.

Every state-changing call needs the bearer token. OpenAPI is served at /openapi.json, and documents
every answer a call can get: a refused call gets a 4xx whose `detail` says why.

The routes live in one module per concern (status.py, metrics.py, events.py, commands.py, docs.py,
and exposition.py for Prometheus at /metrics);
`create_app` wires them to one running `fm up`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fridaymorning import __version__
from fridaymorning.api import commands, events, exposition, metrics, status
from fridaymorning.api.dashboard import install_dashboard
from fridaymorning.api.dependencies import RuntimeView
from fridaymorning.api.docs import mount_docs
from fridaymorning.api.events import EventHub
from fridaymorning.errors import FridayMorningError, RolloutError

__all__ = ["RuntimeView", "create_app"]


async def refused(_: Request, error: Exception) -> JSONResponse:
    """A command the rollout's phase or the version rule does not allow: 409 with the reason."""
    return JSONResponse({"detail": str(error)}, status_code=409)


async def failed(_: Request, error: Exception) -> JSONResponse:
    """The controller or its state store failed: 503 with the reason."""
    return JSONResponse({"detail": f"the controller could not do this: {error}"}, status_code=503)


def create_app(runtime: RuntimeView, token: str) -> FastAPI:
    """The API of one running `fm up`; its routes find `runtime` and `token` on `app.state`."""
    # /docs is served from the package's own copy of Swagger UI (api/docs.py), never from a CDN.
    app = FastAPI(title="fridaymorning", version=__version__, docs_url=None, redoc_url=None)
    mount_docs(app)
    app.state.runtime = runtime
    app.state.token = token
    app.state.hub = EventHub(runtime.states)
    app.state.exposition = exposition.Exposition(runtime)
    install_dashboard(app, runtime, token)  # the web dashboard at /, and the read rule beyond loopback
    app.add_exception_handler(RolloutError, refused)
    app.add_exception_handler(FridayMorningError, failed)
    for routes in (status.router, metrics.router, events.router, commands.router, exposition.router):
        app.include_router(routes)
    return app
