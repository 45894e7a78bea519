"""``/docs`` and ``/redoc`` of both apps render in a real browser with no internet.

Debian's Chromium (headless, driven by Playwright) opens the pages of a real uvicorn server while
every request to a host other than the server's loopback address is blocked and recorded: the
test fails if any is made. Swagger UI must list the operations, ReDoc must render them, and the
HTML must name no external host (no CDN, no Google Fonts).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from faceport.api.app import create_app, create_privacy_app
from tests.api.conftest import serving

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# what each app's docs must show: one of its operations
APPS = [("main", create_app, "/api/v1/face/detect"), ("privacy", create_privacy_app, "/api/v1/process")]



@pytest.fixture
def browser(chromium_path: Path) -> Any:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


def _external_hosts(html: str) -> set[str]:
    return {urlsplit(url).hostname or url for url in re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", html)
            if (urlsplit(url).hostname or "") not in LOOPBACK}


@pytest.mark.parametrize(("app_name", "factory", "operation"), APPS)
def test_docs_and_redoc_render_offline(settings, browser, app_name: str, factory: Any, operation: str) -> None:
    with serving(settings, factory) as server:
        for page_path in ("/docs", "/redoc"):
            response = httpx.get(f"{server.url}{page_path}")
            html = response.text
            assert "default-src 'self'" in response.headers["content-security-policy"]
            assert _external_hosts(html) == set(), (page_path, html)
            assert "fonts.googleapis" not in html

        context = browser.new_context()
        blocked: list[str] = []

        def guard(route: Any) -> None:
            if (urlsplit(route.request.url).hostname or "") in LOOPBACK:
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        page = context.new_page()
        page.goto(f"{server.url}/docs", wait_until="networkidle")
        swagger_paths = page.locator(".opblock-summary-path")
        swagger_paths.first.wait_for(timeout=60_000)
        shown = set(swagger_paths.all_inner_texts())
        assert any(operation in text.replace("\u200b", "") for text in shown), shown

        page.goto(f"{server.url}/redoc", wait_until="networkidle")
        page.locator("[data-section-id^='operation/']").first.wait_for(timeout=60_000)
        redoc_text = page.locator(".api-content").inner_text()
        assert operation in redoc_text, redoc_text[:2000]
        context.close()
        assert blocked == [], f"the docs pages requested external hosts: {blocked}"
