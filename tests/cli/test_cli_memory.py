"""`agentd memory ...` and the client's memory-block methods against a live daemon."""

from __future__ import annotations

import json

from tests.cli.conftest import Invoke, one_error_line

from agentd.client import APIError, Client


def test_set_show_blocks_history_restore_delete(cli: Invoke, agent_name: str) -> None:
    assert cli("create", agent_name).exit_code == 0
    empty = cli("memory", "blocks", agent_name)
    assert empty.exit_code == 0 and "no memory blocks" in empty.stdout

    made = cli("memory", "set", agent_name, "human", "Name: Ann.", "--description",
               "About the user", "--limit", "100")
    assert made.exit_code == 0, made.output
    assert "human: 10/100 chars, version 1" in made.stdout
    # A second write keeps the description and limit; "-" reads the value from stdin.
    again = cli("memory", "set", agent_name, "human", "-", "--read-only",
                input="Name: Ann.\nLikes tea.\n")
    assert again.exit_code == 0, again.output
    assert "version 2, read-only" in again.stdout

    shown = cli("memory", "show", agent_name, "human")
    assert shown.exit_code == 0, shown.output
    assert "About the user" in shown.stdout
    assert shown.stdout.endswith("Name: Ann.\nLikes tea.\n\n")
    block = json.loads(cli("memory", "show", agent_name, "human", "--json").stdout)
    assert (block["value"], block["limit"], block["read_only"], block["version"]) == (
        "Name: Ann.\nLikes tea.\n", 100, True, 2)

    table = cli("memory", "blocks", agent_name)
    assert table.exit_code == 0, table.output
    assert "human" in table.stdout and "22/100" in table.stdout
    assert "yes" in table.stdout and "About the user" in table.stdout
    listed = json.loads(cli("memory", "blocks", agent_name, "--json").stdout)
    assert [b["label"] for b in listed] == ["human"]

    history = cli("memory", "history", agent_name, "human")
    assert history.exit_code == 0, history.output
    assert "api" in history.stdout and "Name: Ann." in history.stdout
    versions = json.loads(cli("memory", "history", agent_name, "human", "--json").stdout)
    assert [v["version"] for v in versions] == [1, 2]

    restored = cli("memory", "restore", agent_name, "human", "1")
    assert restored.exit_code == 0, restored.output
    assert "restored version 1" in restored.stdout and "version 3" in restored.stdout
    assert json.loads(cli("memory", "show", agent_name, "human", "--json").stdout)[
        "value"] == "Name: Ann."

    deleted = cli("memory", "delete", agent_name, "human")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(cli("memory", "blocks", agent_name, "--json").stdout) == []
    assert "block_not_found" in one_error_line(cli("memory", "show", agent_name, "human"))


def test_share_makes_one_block_for_both_agents(cli: Invoke, agent_name: str) -> None:
    other = f"{agent_name}-b"
    cli("create", agent_name)
    cli("create", other)
    cli("memory", "set", agent_name, "project", "v1")
    shared = cli("memory", "share", agent_name, "project", other)
    assert shared.exit_code == 0, shared.output
    assert f"shared block project of {agent_name} with {other}" in shared.stdout
    # A write through the other agent is what the first one sees: one block.
    assert cli("memory", "set", other, "project", "v2").exit_code == 0
    assert json.loads(cli("memory", "show", agent_name, "project", "--json").stdout)[
        "value"] == "v2"


def test_values_are_printed_verbatim_never_as_markup(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    value = "[red]x[/] [bold]y[/bold] [link=http://evil]z[/link] \x1b]52;c;AA\x07"
    made = cli("memory", "set", agent_name, "notes", value, "--description", "[i]d[/i]")
    assert made.exit_code == 0, made.output
    shown = cli("memory", "show", agent_name, "notes")
    assert shown.exit_code == 0, shown.output
    assert "[red]x[/] [bold]y[/bold] [link=http://evil]z[/link]" in shown.stdout
    assert "[i]d[/i]" in shown.stdout
    assert "\x1b" not in shown.stdout and "\\x1b]52" in shown.stdout  # made visible
    for args in (("blocks", agent_name), ("history", agent_name, "notes")):
        table = cli("memory", *args)
        assert table.exit_code == 0, table.output
        assert "[i]d[/i]" in table.stdout or "[red]x[/]" in table.stdout


def test_bad_input_and_unknown_names_are_one_error_line(cli: Invoke, agent_name: str
                                                        ) -> None:
    cli("create", agent_name)
    line = one_error_line(cli("memory", "set", agent_name, "human", "x", "--limit", "0"))
    assert "invalid_input" in line and "limit" in line
    assert "block_not_found" in one_error_line(cli("memory", "show", agent_name, "nope"))
    assert "block_not_found" in one_error_line(
        cli("memory", "restore", agent_name, "nope", "1"))
    assert "agent_not_found" in one_error_line(cli("memory", "blocks", f"{agent_name}-x"))
    # Nothing was stored by the refused write.
    assert json.loads(cli("memory", "blocks", agent_name, "--json").stdout) == []
    # A value over the limit is refused and the stored one kept.
    cli("memory", "set", agent_name, "short", "ok", "--limit", "5")
    assert "block_over_limit" in one_error_line(
        cli("memory", "set", agent_name, "short", "far too long"))
    assert json.loads(cli("memory", "show", agent_name, "short", "--json").stdout)[
        "value"] == "ok"


def test_client_memory_methods(cli: Invoke, live_url: str, agent_name: str) -> None:
    # (cli: the daemon's home in the environment, so the client finds its token)
    with Client(live_url) as client:
        client.create_agent(agent_name, model="scripted")
        client.create_agent(f"{agent_name}-b", model="scripted")
        made = client.put_block(agent_name, "a.b_c-1", "one", description="d", limit=50)
        assert (made["label"], made["chars"], made["version"]) == ("a.b_c-1", 3, 1)
        patched = client.patch_block(agent_name, "a.b_c-1", value="two", read_only=True)
        assert (patched["value"], patched["read_only"], patched["limit"]) == ("two", True, 50)
        assert client.get_block(agent_name, "a.b_c-1")["version"] == 2
        assert [b["label"] for b in client.list_blocks(agent_name)] == ["a.b_c-1"]
        history = client.block_history(agent_name, "a.b_c-1")
        assert [(v["version"], v["value"]) for v in history] == [(1, "one"), (2, "two")]
        assert client.restore_block(agent_name, "a.b_c-1", 1)["value"] == "one"
        client.attach_block(agent_name, "a.b_c-1", f"{agent_name}-b")
        assert client.get_block(f"{agent_name}-b", "a.b_c-1")["value"] == "one"
        client.delete_block(agent_name, "a.b_c-1")
        assert client.list_blocks(agent_name) == []
        # A label with a slash stays one path segment: a 4xx, not another route.
        try:
            client.get_block(agent_name, "../x")
        except APIError as exc:
            assert exc.status in (404, 422), exc
        else:
            raise AssertionError("a label with a slash was accepted")
