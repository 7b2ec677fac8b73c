"""`/docs` (Swagger UI) and `/redoc` work on a hub without internet access: every script,
stylesheet and icon they load comes from the API itself; in a real browser, Swagger UI
lists the API's operations."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from selenium.webdriver.common.by import By

from control_api.app import create_app
from control_api.config import ApiSettings
from tests.support.browser import artifact_dir, chromium
from tests.support.services import free_port, wait_for

# Where a page names something to load or follow: src, href, a spec-url, Swagger UI's url.
REFERENCE = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|\burl: *'([^']+)'""")


@pytest.fixture(scope="module")
def app_client() -> TestClient:
    # The pages and their assets need neither the database nor the broker: no lifespan.
    return TestClient(create_app(ApiSettings()))


def references(page: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(page)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_everything_from_the_api_itself(app_client, page):
    response = app_client.get(page)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "://" not in response.text, "nothing may come from another host"
    urls = references(response.text)
    assert "/openapi.json" in urls
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, urls
    for url in urls:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = app_client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    for script in scripts:
        body = app_client.get(script).text
        # Swagger UI's and ReDoc's bundles, not an error page.
        assert ("SwaggerUIBundle" in body) or ("Redoc" in body), script


def test_every_schema_reference_resolves(app_client):
    """ReDoc renders nothing at all when one reference is dangling."""
    schema = app_client.get("/openapi.json").json()
    referenced = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(schema)))
    assert referenced
    assert referenced <= set(schema["components"]["schemas"])


def test_the_oauth2_redirect_page_is_served(app_client):
    response = app_client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "oauth2" in response.text


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The app over real HTTP (uvicorn in a thread), for a browser."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10, "uvicorn started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.integration
def test_swagger_ui_lists_the_operations_in_a_browser(tmp_path):
    app = create_app(ApiSettings())
    with served(app) as url, chromium(width=1280, height=900) as browser:
        browser.get(f"{url}/docs")

        def operations() -> list[str]:
            found = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
            return [str(op.get_attribute("data-path")) for op in found]

        wait_for(lambda: "/audit" in operations(), 30, "Swagger UI listed the operations")
        assert {"/nodes", "/nodes/{node_id}/commands", "/audit/verify"} <= set(operations())
        browser.save_screenshot(str(artifact_dir(tmp_path) / "api-docs.png"))
        browser.get(f"{url}/redoc")
        # ReDoc names each operation by its summary (FastAPI's, from the route's name).
        wait_for(
            lambda: "List Audit" in str(browser.find_element(By.TAG_NAME, "body").text),
            30,
            "ReDoc listed the operations",
        )
