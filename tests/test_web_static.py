"""The web app at ``/``: served from the package with the right types and caching headers,
only the app's own files (no listing, no way out of the folder), without touching the API,
and with every file the wheel must carry named by the package-data globs."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from boltorezka.api import webapp
from tests.conftest import ROOT

WEB = ROOT / "boltorezka" / "web"
IMPORT = re.compile(r"""(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"](\.[^'"]+)['"]""")


def _app_files() -> list[Path]:
    return sorted(p for p in WEB.rglob("*") if p.is_file())


async def test_root_is_the_app_with_document_headers(client: TestClient[Any, Any]) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    body = await response.text()
    assert '<script type="module" src="/app/main.js"></script>' in body
    assert body == (WEB / "index.html").read_text(encoding="utf-8")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Request-ID"]

    again = await client.get("/", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == response.headers["ETag"]


async def test_every_file_is_served_with_its_content_type(client: TestClient[Any, Any]) -> None:
    expected = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    expected |= {".svg": "image/svg+xml", ".html": "text/html; charset=utf-8"}
    files = _app_files()
    assert len(files) > 10
    for path in files:
        url = "/" + path.relative_to(WEB).as_posix()
        response = await client.get(url)
        assert response.status == 200, url
        assert response.headers["Content-Type"] == expected[path.suffix], url
        assert await response.read() == path.read_bytes(), url
        # Module scripts need a JavaScript type; nosniff makes browsers insist on it.
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Security-Policy" in response.headers or path.suffix != ".html"


async def test_head_and_other_methods(client: TestClient[Any, Any]) -> None:
    head = await client.head("/app/main.js")
    assert head.status == 200
    assert await head.read() == b""
    assert head.headers["Content-Type"].startswith("text/javascript")
    post = await client.post("/", data=b"x")
    assert post.status == 405
    assert post.headers["Allow"] == "GET,HEAD"
    assert (await post.json())["code"] == "method_not_allowed"


async def test_no_listing_and_no_way_out_of_the_folder(client: TestClient[Any, Any]) -> None:
    for url in ("/app/", "/app", "/sdk/", "/index.html/", "/app/main.js.map", "/README.md"):
        response = await client.get(url)
        assert response.status == 404, url
        assert (await response.json())["code"] == "route_not_found", url
    secret = (ROOT / "pyproject.toml").read_bytes()
    raw_targets = [
        "/../pyproject.toml",
        "/app/../../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/app/%2e%2e/%2e%2e/pyproject.toml",
        "/app/..%2f..%2fpyproject.toml",
        "//etc/passwd",
        "/app\\..\\..\\pyproject.toml",
        "/..%5c..%5cpyproject.toml",
    ]
    port = client.server.port
    assert port is not None
    for target in raw_targets:
        # Raw request lines: an HTTP client library would normalise the dots away.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 404), (target, answer[:200])
        assert secret not in answer and b"root:" not in answer, target


async def test_the_api_is_untouched(client: TestClient[Any, Any]) -> None:
    missing = await client.get("/v1/no-such-thing")
    assert missing.status == 404
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    health = await client.get("/healthz")
    assert await health.json() == {"status": "ok"}
    # The router answers first; the app only fills in where it matched nothing.
    document = await client.get("/v1/openapi.json")
    assert document.headers["Content-Type"].startswith("application/json")


def test_every_relative_import_resolves_to_a_served_file() -> None:
    table = webapp.load()
    modules = [p for p in _app_files() if p.suffix == ".js"]
    for module in modules:
        url = "/" + module.relative_to(WEB).as_posix()
        for target in IMPORT.findall(module.read_text(encoding="utf-8")):
            resolved = (Path(url).parent / target).as_posix()
            resolved = re.sub(r"/[^/]+/\.\./", "/", resolved.replace("/./", "/"))
            assert resolved in table, f"{url} imports {target}, which is not served"
    for reference in re.findall(r'(?:src|href)="(/[^"]+)"', (WEB / "index.html").read_text()):
        assert reference in table, reference


def test_package_data_globs_ship_every_file_of_the_app() -> None:
    """The wheel carries what pyproject.toml's package-data names: a file the globs miss
    would be served from a checkout but missing from an installed server."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns: list[str] = config["tool"]["setuptools"]["package-data"]["boltorezka"]
    package = ROOT / "boltorezka"
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    assert shipped == set(_app_files()), sorted(str(p) for p in set(_app_files()) - shipped)


def test_the_checkout_links_clients_web_src_to_the_packaged_app() -> None:
    link = ROOT / "clients" / "web" / "src"
    assert link.is_symlink() and link.resolve() == WEB.resolve()
