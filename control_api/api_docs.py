"""The API's own documentation pages, Swagger UI at `/docs` and ReDoc at `/redoc`, with
their scripts, stylesheet and icon served by the API itself: a hub without internet
access shows them too. The assets are those the `fastapi-offline` package bundles;
the pages are FastAPI's own, pointed at them."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

OPENAPI_URL = "/openapi.json"
SWAGGER_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
# Every path of the documentation: none of them is audited.
DOCS_PATHS = frozenset({OPENAPI_URL, SWAGGER_URL, OAUTH2_REDIRECT_URL, REDOC_URL, ASSETS_URL})


def _assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def _root(request: Request) -> str:
    """The prefix a proxy serves the API under, as FastAPI's own pages use it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def add_docs(app: FastAPI) -> None:
    """Serves the documentation pages of `app`, which was made with `docs_url=None` and
    `redoc_url=None` (FastAPI's own pages load their assets from a CDN)."""
    app.mount(ASSETS_URL, StaticFiles(directory=_assets_dir()), name="docs_assets")

    @app.get(SWAGGER_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_redoc_html(
            openapi_url=root + OPENAPI_URL,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
