"""The daemon's door: a token from the first start, private files, admins, the client.

The attack these close: with no token configured (the old default) anything on
loopback (a sandboxed agent with a network grant, any command on the process backend)
used the whole API, and the daemon's home and database were readable by every local
user.
"""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from agentd.assembly import Runtime
from agentd.assembly.reload import Reloader
from agentd.client import Client
from agentd.config import Settings
from agentd.server.app import create_app
from agentd.testing.live import LiveServer


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_fresh_daemon_requires_its_generated_token(settings: Settings) -> None:
    settings.home.mkdir(mode=0o755)
    settings.home.chmod(0o755)  # as an older agentd left it
    rt = await Runtime.open(settings)
    try:
        app = create_app(settings, rt)
        token_file = settings.home / "token"
        token = token_file.read_text().strip()
        assert len(token) >= 40
        assert _mode(token_file) == 0o600 and _mode(settings.home) == 0o700
        for name in ("agentd.db", "agentd.db-wal", "agentd.db-shm"):
            assert _mode(settings.home / name) == 0o600, name
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v1/agents")).status_code == 401
            assert (await client.post("/v1/agents", json={"name": "x"})).status_code == 401
            assert (await client.get("/health")).status_code == 200  # public
            ok = await client.get("/v1/agents", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
        # A second start keeps the same token (clients on this machine rely on it).
        create_app(settings, rt)
        assert token_file.read_text().strip() == token
    finally:
        await rt.close()


async def test_a_token_file_left_open_is_closed(settings: Settings) -> None:
    settings.home.mkdir(mode=0o700)
    (settings.home / "token").write_text("abcdefghijklmnopqrstuvwxyz0123456789\n")
    (settings.home / "token").chmod(0o644)
    unopened = Runtime.__new__(Runtime)  # (only the token file is looked at)
    unopened.reloader = Reloader(settings)
    create_app(settings, unopened)
    assert _mode(settings.home / "token") == 0o600


def test_the_client_and_cli_pick_up_the_local_token(settings: Settings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTD_HOME", str(settings.home))
    with LiveServer(settings) as server:
        with Client(server.url) as client:  # no token given: read from the home
            assert client.list_agents() == []
        with Client(server.url, token="wrong") as client, pytest.raises(Exception) as err:
            client.list_agents()
        assert getattr(err.value, "status", None) == 401
    # A daemon elsewhere never gets this machine's token.
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=[])

    with Client("http://agentd.example.invalid:8721",
                transport=httpx.MockTransport(answer)) as remote:  # type: ignore[arg-type]
        assert remote.list_agents() == []
    [request] = sent
    assert "authorization" not in request.headers


async def test_only_admins_configure_stdio_servers_off_the_list(settings: Settings) -> None:
    settings.tokens = ["admin-secret-0123456789", "user-secret-0123456789"]
    settings.admin_tokens = ["token-1"]
    settings.mcp_commands = ["uvx mcp-server-fetch"]
    rt = await Runtime.open(settings)
    try:
        app = create_app(settings, rt)
        transport = httpx.ASGITransport(app=app)
        admin = {"Authorization": "Bearer admin-secret-0123456789"}
        user = {"Authorization": "Bearer user-secret-0123456789"}

        def agent(name: str, command: list[str]) -> dict[str, object]:
            return {"name": name, "settings": {"mcp": [{"name": "s", "command": command}]}}

        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            refused = await client.post("/v1/agents", headers=user,
                                        json=agent("u1", ["python3", "-c", "evil"]))
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "forbidden"
            assert "mcp_commands" in refused.json()["error"]["message"]
            # A listed command's words must begin the server's command.
            prefix = await client.post("/v1/agents", headers=user,
                                       json=agent("u2", ["uvx", "mcp-server-fetchX"]))
            assert prefix.status_code == 403
            listed = await client.post("/v1/agents", headers=user,
                                       json=agent("u3", ["uvx", "mcp-server-fetch", "-v"]))
            assert listed.status_code == 201, listed.text
            # Nor through PATCH.
            patched = await client.patch("/v1/agents/u3", headers=user, json={
                "settings": {"mcp": [{"name": "s", "command": ["sh", "-c", "id"]}]}})
            assert patched.status_code == 403
            assert (await client.get("/v1/agents/u3", headers=user)).json()[
                "settings"]["mcp"][0]["command"][0] == "uvx"
            by_admin = await client.post("/v1/agents", headers=admin,
                                         json=agent("a1", ["python3", "server.py"]))
            assert by_admin.status_code == 201, by_admin.text
            assert (await client.get("/v1/agents", headers=user)).status_code == 200
    finally:
        await rt.close()


def test_the_daemons_environment_is_closed_to_its_own_user(tmp_path: Path) -> None:
    """A command run as the daemon's own user (the process backend of a non-root
    daemon) read the daemon's keys from /proc/PID/environ."""
    import os
    import subprocess
    import sys

    from agentd.sandbox.limits import SANDBOX_GID, SANDBOX_UID

    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root to run both processes as one other user")
    src = str(Path(__file__).parents[2] / "src" / "agentd" / "security" / "tokens.py")

    def as_nobody() -> None:
        os.setgid(SANDBOX_GID)
        os.setuid(SANDBOX_UID)

    def secret_holder(protect: bool) -> subprocess.Popen[bytes]:
        # tokens.py alone (the package needs the venv's libraries).
        code = ("import importlib.util as u, sys, time; "
                "s = u.spec_from_file_location('t', sys.argv[1]); m = u.module_from_spec(s); "
                "s.loader.exec_module(m); "
                f"assert m.undumpable() if {protect} else True; print('ready', flush=True); "
                "time.sleep(60)")
        proc = subprocess.Popen(["/usr/bin/python3", "-c", code, src],
                                env={"PROVIDER_KEY": "sk-secret"}, stdout=subprocess.PIPE,
                                preexec_fn=as_nobody)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        return proc

    def read_environ(pid: int) -> str:
        done = subprocess.run(["/usr/bin/python3", "-c",
                               f"print(open('/proc/{pid}/environ').read())"],
                              capture_output=True, text=True, preexec_fn=as_nobody,
                              timeout=30, check=False)
        return done.stdout + done.stderr

    for protect in (False, True):
        holder = secret_holder(protect)
        try:
            seen = read_environ(holder.pid)
        finally:
            holder.kill()
            holder.wait()
        if protect:
            assert "sk-secret" not in seen and "PermissionError" in seen, seen
        else:
            assert "sk-secret" in seen, seen  # the test can see the leak it guards
    assert sys.platform == "linux"


@pytest.mark.parametrize("entry", ['uvx "unclosed', "   "])
def test_a_bad_mcp_commands_entry_stops_the_config(entry: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="mcp_commands"):
        Settings(mcp_commands=[entry])
