"""The Python client finds the local daemon as the CLI does: AGENTD_URL, else
AGENTD_HOST / AGENTD_PORT / agentd.toml, with that daemon's token."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.client import Client, ClientError


def test_the_client_honours_agentd_port(live_url: str, live_home: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    port = live_url.rsplit(":", 1)[1]
    monkeypatch.setenv("AGENTD_PORT", port)
    monkeypatch.setenv("AGENTD_HOME", str(live_home))  # its bootstrap token
    monkeypatch.delenv("AGENTD_URL", raising=False)
    with Client() as client:
        assert client.base_url == f"http://127.0.0.1:{port}"
        assert client.list_agents() is not None  # authorised with the home's token


def test_agentd_toml_and_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "agentd.toml").write_text('port = 9123\ntokens = ["from-toml-0123456789"]\n')
    monkeypatch.setenv("AGENTD_HOME", str(home))
    for var in ("AGENTD_URL", "AGENTD_PORT", "AGENTD_HOST", "AGENTD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:9123"
        assert client._http.headers["authorization"] == "Bearer from-toml-0123456789"
    monkeypatch.setenv("AGENTD_HOST", "0.0.0.0")
    monkeypatch.setenv("AGENTD_TOKEN", "env-wins")
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:9123"  # a wildcard bind, reached locally
        assert client._http.headers["authorization"] == "Bearer env-wins"
    monkeypatch.setenv("AGENTD_URL", "http://elsewhere:1")
    with Client() as client:
        assert client.base_url == "http://elsewhere:1"


def test_a_bad_port_is_a_client_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTD_URL", raising=False)
    monkeypatch.setenv("AGENTD_PORT", "not-a-port")
    with pytest.raises(ClientError, match="invalid agentd configuration: port"):
        Client()
    # An explicit URL needs no configuration at all.
    with Client("http://127.0.0.1:1") as client:
        assert client.base_url == "http://127.0.0.1:1"



@pytest.mark.parametrize(("text", "said"), [
    ("prot = 5\n", "unknown setting(s) 'prot' (did you mean 'port'?)"),
    ("port = 9123\nconsol = false\n", "'consol' (did you mean 'console'?)"),
    ("[webhooks\n", "is not valid TOML: Expected ']'"),
    ('port = "x\n', "is not valid TOML"),
])
def test_a_config_file_agentd_cannot_read_is_one_clear_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, said: str) -> None:
    """A typo in agentd.toml: one line naming the file and the problem, from the
    client, every CLI command and the daemon (it was a 150-line traceback; an unknown
    top-level key was ignored while one inside a table was refused)."""
    from typer.testing import CliRunner

    from agentd.cli import app
    from agentd.server.daemon import run

    home = tmp_path / "home"
    home.mkdir()
    (home / "agentd.toml").write_text(text)
    monkeypatch.setenv("AGENTD_HOME", str(home))
    for var in ("AGENTD_URL", "AGENTD_PORT", "AGENTD_HOST", "AGENTD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ClientError, match="invalid agentd configuration") as caught:
        Client()
    assert said in str(caught.value) and str(home / "agentd.toml") in str(caught.value)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code != 0 and said in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) <= 3
    assert run() == 2  # the daemon refuses to start, saying why on stderr
