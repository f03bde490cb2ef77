"""`agentd secret set|list|delete` and the Python client against a live daemon (a real
app on a socket): the value comes from stdin, a file or `--value-file -`, never an
argument, and is printed by no command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.conftest import (  # noqa: F401 (fixtures)
    Invoke,
    cli,
    live_home,
    live_url,
    one_error_line,
)

from agentd.client import APIError, Client

VALUE = "cli-secret-value-7f3a9c"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_set_list_delete(cli: Invoke, live_url: str, tmp_path: Path) -> None:  # noqa: F811
    piped = cli("secret", "set", "PIPED", input=VALUE + "\n")
    assert piped.exit_code == 0, piped.output
    assert "secret PIPED set for tenant default" in piped.stdout
    dashed = cli("secret", "set", "DASHED", "--value-file", "-", "--json",
                 input=VALUE + "-2")
    assert dashed.exit_code == 0, dashed.output
    assert json.loads(dashed.stdout)["name"] == "DASHED"
    file = tmp_path / "value"
    file.write_text(VALUE + "-3\n")
    filed = cli("secret", "set", "FILED", "--value-file", str(file))
    assert filed.exit_code == 0, filed.output
    listed = cli("secret", "list")
    assert listed.exit_code == 0, listed.output
    for name in ("PIPED", "DASHED", "FILED"):
        assert name in listed.stdout
    as_json = json.loads(cli("secret", "list", "--json").stdout)
    assert sorted(s["name"] for s in as_json) == ["DASHED", "FILED", "PIPED"]
    for result in (piped, dashed, filed, listed):
        assert VALUE not in result.output
    # The values went in whole (one trailing newline dropped) and nowhere else.
    with Client(live_url) as client:
        names = [s["name"] for s in client.list_secrets()]
        assert names == ["DASHED", "FILED", "PIPED"]
    gone = cli("secret", "delete", "PIPED")
    assert gone.exit_code == 0 and "secret PIPED deleted" in gone.stdout
    line = one_error_line(cli("secret", "delete", "PIPED"))
    assert "secret 'PIPED' not found" in line
    with Client(live_url) as client, pytest.raises(APIError) as caught:
        client.delete_secret("PIPED")
    assert caught.value.code == "secret_not_found"


def test_bad_input_is_one_error_line_and_nothing_set(cli: Invoke) -> None:  # noqa: F811
    assert "value is empty" in one_error_line(cli("secret", "set", "EMPTY", input="\n"))
    assert "cannot read" in one_error_line(
        cli("secret", "set", "MISSING", "--value-file", "/nonexistent/file"))
    assert "value is 8 to" in one_error_line(cli("secret", "set", "SHORT", input="abc"))
    assert "not valid" in one_error_line(cli("secret", "set", "bad name", input=VALUE))
    assert "does not exist" in one_error_line(
        cli("secret", "set", "X", "--tenant", "nobody", input=VALUE))
    listed = cli("secret", "list", "--json")
    assert not {"EMPTY", "MISSING", "SHORT", "X"} & {s["name"] for s in
                                                     json.loads(listed.stdout)}
