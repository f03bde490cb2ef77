"""`agentd skill install|list|show|remove|enable|disable` and the client's skill
methods against a live daemon (a real socket)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.conftest import Invoke, one_error_line
from tests.skills._kit import folder, good_files, tar_of, zip_of

from agentd.client import APIError, Client
from agentd.security.tokens import read_token


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_install_list_show_enable_disable_remove(cli: Invoke, agent_name: str,
                                                 tmp_path: Path) -> None:
    source = folder(tmp_path, "cli-skill", description="A [bold]skill[/bold] for the CLI.")
    made = cli("skill", "install", str(source))
    assert made.exit_code == 0, made.output
    assert "installed skill cli-skill (2 files" in made.stdout
    listed = cli("skill", "list")
    assert listed.exit_code == 0 and "cli-skill" in listed.stdout
    # A package's text is printed as it is, never read as markup.
    assert "A [bold]skill[/bold] for the CLI." in listed.stdout
    shown = cli("skill", "show", "cli-skill")
    assert shown.exit_code == 0 and "# PDF tools" in shown.stdout
    assert "scripts/extract.py" in shown.stdout
    as_json = json.loads(cli("skill", "show", "cli-skill", "--json").stdout)
    assert as_json["body"].startswith("# PDF tools")

    again = cli("skill", "install", str(source))
    assert "skill_exists" in one_error_line(again) or "installed already" in again.stderr
    assert cli("skill", "install", str(source), "--replace").exit_code == 0

    assert cli("create", agent_name).exit_code == 0
    on = cli("skill", "enable", agent_name, "cli-skill")
    assert on.exit_code == 0 and f"{agent_name}'s skills: cli-skill" in on.stdout
    missing = cli("skill", "enable", agent_name, "nope")
    assert "no skill named 'nope'" in one_error_line(missing)
    off = cli("skill", "disable", agent_name, "cli-skill")
    assert off.exit_code == 0 and "skills: none" in off.stdout

    assert cli("skill", "remove", "cli-skill").exit_code == 0
    assert "no skill named" in one_error_line(cli("skill", "remove", "cli-skill"))


def test_a_bad_package_is_one_line_naming_the_field(cli: Invoke, tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    archive.write_bytes(zip_of(good_files("Bad"), top="Bad"))
    line = one_error_line(cli("skill", "install", str(archive)))
    assert "invalid skill name" in line and "SKILL.md.name" in line
    assert "no such file" in one_error_line(cli("skill", "install",
                                                str(tmp_path / "missing")))


def test_the_client(live_url: str, live_home: Path, tmp_path: Path) -> None:
    with Client(live_url, token=read_token(live_home)) as client:
        archive = tmp_path / "client-skill.tar.gz"
        archive.write_bytes(tar_of(good_files("client-skill"), top="client-skill"))
        made = client.install_skill(archive)
        assert made["name"] == "client-skill"
        raw = client.install_skill(zip_of(good_files("client-skill"), top="client-skill"),
                                   replace=True)
        assert raw["hash"] == made["hash"]
        assert "client-skill" in [s["name"] for s in client.list_skills()]
        with pytest.raises(APIError) as caught:
            client.install_skill(b"junk")
        assert caught.value.code == "invalid_skill"
        client.remove_skill("client-skill")
        with pytest.raises(APIError) as caught:
            client.get_skill("client-skill")
        assert caught.value.code == "skill_not_found"
