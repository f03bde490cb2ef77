"""The console's files through the ASGI app: public, with the policy headers, read
from the package; off with ``console = false`` (then nothing under /ui is public)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import asgi_client

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.web import ASSETS, SECURITY_HEADERS
from agentd.web._serve import install


async def test_the_console_is_public_and_the_api_is_not(settings: Settings,
                                                         runtime: Runtime) -> None:
    async with asgi_client(settings, runtime) as anonymous:
        del anonymous.headers["Authorization"]
        page = await anonymous.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        for name, value in SECURITY_HEADERS.items():
            assert page.headers[name] == value
        script = await anonymous.get("/ui/assets/app.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert (await anonymous.head("/ui/assets/console.css")).status_code == 200
        assert (await anonymous.get("/ui/assets/missing.js")).status_code == 404
        assert (await anonymous.post("/ui/")).status_code in (401, 405)
        # A public prefix does not stretch: /uix and /ui-anything need the token.
        assert (await anonymous.get("/uiassets/app.js")).status_code == 401
        assert (await anonymous.get("/v1/agents")).status_code == 401


async def test_the_daemons_root_points_to_the_console(settings: Settings,
                                                       runtime: Runtime) -> None:
    """It was a 401 naming nothing: a browser is sent to the console, anything else
    told where things are; nothing of the daemon's state is in it."""
    async with asgi_client(settings, runtime) as anonymous:
        del anonymous.headers["Authorization"]
        browser = await anonymous.get("/", headers={"Accept": "text/html,*/*"})
        assert browser.status_code == 307 and browser.headers["location"] == "/ui/"
        index = await anonymous.get("/")
        assert index.status_code == 200
        assert index.json() == {"console": "/ui/", "api": "/v1",
                                "openapi": "/openapi.json", "health": "/health"}
        # Only the root: a path below it still needs the token.
        assert (await anonymous.get("/anything")).status_code == 401


async def test_console_off_serves_nothing_and_opens_nothing(
        settings: Settings, runtime: Runtime) -> None:
    off = settings.model_copy(update={"console": False})
    async with asgi_client(off, runtime) as anonymous:
        del anonymous.headers["Authorization"]
        assert (await anonymous.get("/ui/")).status_code == 401
        assert (await anonymous.get("/ui/assets/app.js")).status_code == 401
        assert (await anonymous.get("/")).status_code == 401
    async with asgi_client(off, runtime) as client:
        assert (await client.get("/ui/")).status_code == 404


@pytest.mark.parametrize("name", ["api.js", "app.js", "live.js", "ui.js"])
def test_the_scripts_never_assign_html(name: str) -> None:
    # The one rule that keeps a hostile reply inert on the page (docs/security.md):
    # every string from the daemon goes in as text.
    source = (ASSETS / name).read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                 "eval(", "new Function"):
        assert sink not in source, f"{name} uses {sink}"


def test_every_page_script_avoids_html_sinks() -> None:
    for path in sorted((ASSETS / "pages").glob("*.js")):
        source = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                     "eval(", "new Function"):
            assert sink not in source, f"{path.name} uses {sink}"


def test_assets_are_only_what_is_in_the_folder(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    (tmp_path / "a.js").write_text("export {};")
    (tmp_path / ".hidden").write_text("secret")
    (tmp_path.parent / "outside.txt").write_text("outside")
    app = FastAPI()
    install(app, tmp_path)
    with TestClient(app) as client:
        assert client.get("/ui/assets/a.js").text == "export {};"
        assert client.get("/ui/assets/.hidden").status_code == 404
        for path in ("/ui/assets/../outside.txt", "/ui/assets/%2e%2e/outside.txt",
                     "/ui/assets/..%2Foutside.txt"):
            assert "outside" not in client.get(path).text


def test_every_file_the_page_names_is_in_the_package() -> None:
    import re

    page = (ASSETS / "index.html").read_text()
    named = re.findall(r'(?:href|src)="/ui/assets/([^"]+)"', page)
    assert "app.js" in named and any(n.endswith(".css") for n in named)
    for name in named:
        assert (ASSETS / name).is_file(), name
    # Every module a script imports is there too.
    for script in ASSETS.rglob("*.js"):
        for target in re.findall(r'^import .*?from "([^"]+)";', script.read_text(), re.M):
            assert (script.parent / target).resolve().is_file(), (script.name, target)
