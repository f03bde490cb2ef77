"""The agent page's Skills tab in Chromium against a real daemon: installing a skill
from an archive on disk (zip, tar.gz), a refused package (named field, nothing
installed), a name installed already (409, then Replace), View (the SKILL.md body as
text, never HTML) and Remove (daemon-wide; an agent that enabled it keeps the name).

Enable / Disable of an installed skill: test_console_agents.py."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import TOKEN, WAIT_MS, make_agent, sign_in

pytestmark = pytest.mark.e2e

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=WAIT_MS)


def skill_md(name: str, description: str, body: str) -> str:
    return f"---\nname: {name}\ndescription: {description}\n---\n{body}"


def make_zip(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return path


def make_tgz(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return path


def skills_of(api: httpx.Client) -> dict[str, dict[str, Any]]:
    listed = api.get("/v1/skills")
    assert listed.status_code == 200, listed.text
    return {s["name"]: s for s in listed.json()["skills"]}


def open_skills(page: Any, daemon: Daemon, agent: str) -> None:
    sign_in(page, daemon, at=f"#/agents/{agent}?tab=skills")
    expect(page.get_by_label("Install skill")).to_be_visible()


def install(page: Any, archive: Path) -> None:
    page.get_by_label("Install skill").set_input_files(str(archive))
    page.get_by_role("button", name="Install", exact=True).click()


def test_install_zip_and_tar_gz_then_view_and_remove(
        page: Any, daemon: Daemon, api: httpx.Client, tmp_path: Path,
        no_policy_violations: None) -> None:
    make_agent(api, "scribe")
    open_skills(page, daemon, "scribe")
    expect(page.locator(".tab-panel")).to_contain_text("No skills are installed")

    # A zip with SKILL.md in one folder named as the skill, and a second file.
    archive = make_zip(tmp_path / "pdf-tools.zip", {
        "pdf-tools/SKILL.md": skill_md("pdf-tools", "Fill and read PDF forms.",
                                       "Use the script.\n"),
        "pdf-tools/scripts/fill.py": "print('fill')\n",
    })
    install(page, archive)
    result = page.locator("#skill-install-result")
    expect(result).to_contain_text("Installed pdf-tools (2 files")
    row = page.locator('[data-skill="pdf-tools"]')
    expect(row).to_contain_text("Fill and read PDF forms.")
    expect(row).to_contain_text("off")
    assert skills_of(api)["pdf-tools"]["files"] == ["SKILL.md", "scripts/fill.py"]

    # A tar.gz with SKILL.md at its top; its body is hostile markup.
    hostile = ("<script>window.__skillPwned = 1</script>\n"
               "<img src=x onerror=\"window.__skillPwned = 2\">\n# Notes\n")
    archive = make_tgz(tmp_path / "notes.tar.gz", {
        "SKILL.md": skill_md("notes", "Keep notes <b>bold</b>.", hostile)})
    install(page, archive)
    expect(result).to_contain_text("Installed notes (1 file")
    expect(page.locator('[data-skill="notes"]')).to_be_visible()
    assert set(skills_of(api)) == {"pdf-tools", "notes"}
    # The file input is cleared for the next one.
    assert page.get_by_label("Install skill").input_value() == ""

    # View: description, files and the body, all as text; nothing in it runs.
    notes = page.locator('[data-skill="notes"]')
    view = notes.get_by_role("button", name="View")
    view.click()
    body = notes.locator("pre.skill-body")
    expect(body).to_contain_text("<script>window.__skillPwned = 1</script>")
    assert body.text_content() == api.get("/v1/skills/notes").json()["body"]
    expect(notes).to_contain_text("Keep notes <b>bold</b>.")
    expect(notes.locator(".skill-files")).to_have_text("SKILL.md")
    expect(notes.locator(".skill-detail")).to_contain_text(skills_of(api)["notes"]["hash"])
    assert notes.locator("script, img, b").count() == 0
    assert page.evaluate("() => window.__skillPwned === undefined")
    expect(notes.get_by_role("button", name="Hide")).to_have_attribute("aria-expanded", "true")
    expect(notes.get_by_role("button", name="Hide")).to_be_focused()
    page.keyboard.press("Enter")
    expect(notes.locator(".skill-detail")).to_have_count(0)

    # Enable it here, then Remove it: asked first, daemon-wide, and the agent keeps the name.
    notes.get_by_role("button", name="Enable").click()
    expect(notes.get_by_role("button", name="Disable")).to_be_visible()
    notes.get_by_role("button", name="Remove notes").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("every agent on this daemon")
    expect(dialog).to_contain_text("scribe enables it")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert "notes" in skills_of(api)
    notes.get_by_role("button", name="Remove notes").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove skill").click()
    expect(notes).to_contain_text("not installed")
    expect(notes).to_contain_text("saving its settings is refused")
    assert api.get("/v1/skills/notes").status_code == 404
    assert set(skills_of(api)) == {"pdf-tools"}
    agent = api.get("/v1/agents/scribe").json()
    assert agent["settings"]["skills"]["enabled"] == ["notes"]
    # What the row says is what the daemon does: saving the agent is refused until the
    # name goes, and Disable (still offered) takes it out.
    refused = api.patch("/v1/agents/scribe", json={"description": "x"})
    assert refused.status_code == 422, refused.text
    notes.get_by_role("button", name="Disable").click()
    expect(page.locator('[data-skill="notes"]')).to_have_count(0)
    assert api.get("/v1/agents/scribe").json()["settings"]["skills"]["enabled"] == []


def test_refused_package_names_the_field_and_installs_nothing(
        page: Any, daemon: Daemon, api: httpx.Client, tmp_path: Path,
        no_policy_violations: None) -> None:
    make_agent(api, "scribe")
    open_skills(page, daemon, "scribe")
    result = page.locator("#skill-install-result")

    # Install with no file chosen: said, nothing sent.
    page.get_by_role("button", name="Install", exact=True).click()
    expect(result).to_contain_text("Choose a .zip, .tar.gz or .tgz archive first.")

    bad = make_zip(tmp_path / "bad.zip", {"SKILL.md": skill_md("Bad_Name", "A bad name.", "x\n")})
    install(page, bad)
    expect(result.locator(".error-box")).to_contain_text("Not installed")
    expect(result.locator(".error-box")).to_contain_text("SKILL.md.name")
    expect(result.locator(".error-box")).to_contain_text("invalid_skill")
    assert skills_of(api) == {}
    expect(page.locator(".skill")).to_have_count(0)

    # Not an archive at all.
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip file at all")
    install(page, junk)
    expect(result.locator(".error-box")).to_contain_text("archive")
    assert skills_of(api) == {}

    # A file over the package's 32 MB a file, as read (it compresses to little): 413.
    big = make_zip(tmp_path / "big.zip", {
        "SKILL.md": skill_md("big", "Big.", "x\n"), "zeros.bin": b"\0" * (33 << 20)})
    assert big.stat().st_size < 1 << 20
    install(page, big)
    expect(result.locator(".error-box")).to_contain_text("Too large")
    expect(result.locator(".error-box")).to_contain_text("'zeros.bin' is larger than")
    expect(result.locator(".error-box")).to_contain_text("(archive)")
    assert skills_of(api) == {}


def test_installed_name_offers_replace_and_replaces(
        page: Any, daemon: Daemon, api: httpx.Client, tmp_path: Path,
        no_policy_violations: None) -> None:
    make_agent(api, "scribe")
    first = make_zip(tmp_path / "v1.zip",
                     {"SKILL.md": skill_md("greet", "Say hello.", "Version one.\n")})
    installed = api.post("/v1/skills", content=first.read_bytes(),
                         headers={"Content-Type": "application/zip"})
    assert installed.status_code == 201, installed.text
    old_hash = installed.json()["hash"]
    open_skills(page, daemon, "scribe")
    expect(page.locator('[data-skill="greet"]')).to_contain_text("Say hello.")

    second = make_tgz(tmp_path / "v2.tgz",
                      {"greet/SKILL.md": skill_md("greet", "Say hello twice.", "Version two.\n")})
    install(page, second)
    result = page.locator("#skill-install-result")
    expect(result).to_contain_text("Already installed: a skill named 'greet' is installed already. "
                                   "Replace it with v2.tgz?")
    replace = result.get_by_role("button", name="Replace")
    expect(replace).to_be_focused()
    assert skills_of(api)["greet"]["hash"] == old_hash

    # Asked first: Cancel replaces nothing.
    replace.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("every agent on this daemon")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert skills_of(api)["greet"]["hash"] == old_hash

    replace.click()
    page.get_by_role("dialog").get_by_role("button", name="Replace skill").click()
    expect(result).to_contain_text("Replaced greet")
    expect(page.locator('[data-skill="greet"]')).to_contain_text("Say hello twice.")
    now = api.get("/v1/skills/greet").json()
    assert now["hash"] != old_hash
    assert now["body"].strip() == "Version two."


@pytest.fixture
def scoped_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon whose console token is scoped to some agents: it may not install skills."""
    started = Daemon(tmp_path / "home-scoped", tmp_path / "agentd-scoped.log",
                     env={"AGENTD_TOKEN": TOKEN,
                          "AGENTD_ACCESS": json.dumps({"token": {"agents": ["scribe*"]}})},
                     args=())
    try:
        yield started.start()
    finally:
        started.cleanup()


def test_a_scoped_token_is_refused_plainly(
        page: Any, scoped_daemon: Daemon, tmp_path: Path, no_policy_violations: None) -> None:
    with scoped_daemon.client(TOKEN) as api:
        make_agent(api, "scribe")
        open_skills(page, scoped_daemon, "scribe")
        archive = make_zip(tmp_path / "s.zip", {"SKILL.md": skill_md("scoped", "No.", "x\n")})
        install(page, archive)
        refusal = page.locator("#skill-install-result .error-box")
        expect(refusal).to_contain_text("Not allowed")
        expect(refusal).to_contain_text("forbidden")
        assert skills_of(api) == {}
