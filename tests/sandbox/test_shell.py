"""The persistent shell: a terminal-like bash in a sandbox that keeps ``cd`` and
``export`` between commands, that output cannot confuse, and that comes back fresh
(and says so) after it was killed. And the pool that keeps one per key."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.sandbox.conftest import all_gone

from agentd.errors import ToolError
from agentd.sandbox.backends import (
    Backend,
    Limits,
)
from agentd.sandbox.shell import PersistentShell, ShellPool

LIMITS = Limits(wall_s=20.0, output_bytes=20_000)




@pytest.fixture
async def shell(backend: Backend, ws: Path) -> AsyncIterator[PersistentShell]:
    sh = await backend.shell(workspace=ws, limits=LIMITS)
    yield sh
    await sh.close()


async def test_cwd_and_exports_persist(shell: PersistentShell, backend: Backend, ws: Path
                                       ) -> None:
    (ws / "sub").mkdir()
    assert (await shell.run("cd sub && export GREETING=hello")).exit_code == 0
    result = await shell.run("pwd; echo $GREETING")
    root = "/workspace" if backend.isolated else str(ws)
    assert result.stdout == f"{root}/sub\nhello\n"
    plain = await backend.run(["sh", "-c", "pwd; echo ${GREETING:-unset}"], workspace=ws,
                              limits=LIMITS)
    assert plain.stdout == f"{root}\nunset\n"  # a one-off run keeps nothing


async def test_exit_status_output_and_previous_status(shell: PersistentShell) -> None:
    result = await shell.run("echo out; echo err >&2; false")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "out\n", "err\n")
    assert (await shell.run("echo $?")).stdout == "1\n"  # as in a terminal
    assert (await shell.run("(exit 42)")).exit_code == 42
    no_newline = await shell.run("printf abc; printf def >&2")
    assert (no_newline.stdout, no_newline.stderr) == ("abc", "def")


async def test_output_cannot_fake_the_end(shell: PersistentShell) -> None:
    """The sentinel holds a fresh nonce each call: printing sentinel-like text, or
    tracing every command, does not end a command early or change its status."""
    fake = "__agentd_" + "0" * 32
    result = await shell.run(f"echo '{fake}:0'; echo '{fake};' >&2; echo after; exit_code=3;"
                             " (exit $exit_code)")
    assert result.stdout == f"{fake}:0\nafter\n" and result.stderr == f"{fake};\n"
    assert result.exit_code == 3
    await shell.run("set -x")
    traced = await shell.run("echo hi")
    assert traced.stdout == "hi\n" and traced.exit_code == 0
    assert "+ echo hi" in traced.stderr
    await shell.run("set +x")
    assert (await shell.run("echo clean")).stderr == ""


async def test_awkward_commands(shell: PersistentShell) -> None:
    assert (await shell.run("cat")).stdout == ""  # stdin is /dev/null, not the protocol
    broken = await shell.run('echo "unbalanced')
    assert broken.exit_code == 2 and "unexpected EOF" in broken.stderr
    heredoc = await shell.run("cat <<'EOF'\nline 1\n'quoted' $HOME\nEOF")
    assert heredoc.stdout == "line 1\n'quoted' $HOME\n"
    quotes = await shell.run("""printf '%s\\n' "it's" 'a "test"' """)
    assert quotes.stdout == "it's\na \"test\"\n"
    multi = await shell.run("for i in 1 2 3; do\n  echo $i\ndone")
    assert multi.stdout == "1\n2\n3\n"
    with pytest.raises(ToolError) as info:
        await shell.run("echo \x00")
    assert info.value.code == "invalid_command"
    assert (await shell.run("echo still here")).stdout == "still here\n"


async def test_exit_restarts_with_a_note(shell: PersistentShell) -> None:
    await shell.run("cd /tmp; export X=1")
    result = await shell.run("exit 3")
    assert result.exit_code == 3 and result.killed is None
    after = await shell.run("echo ${X:-unset}")
    assert after.stdout == "unset\n" and shell.restarted and shell.restarts == 1
    assert after.stderr.startswith("[agentd] the previous shell exited with status 3")
    again = await shell.run("true")
    assert again.stderr == "" and not shell.restarted


async def test_timeout_kills_the_shell_and_everything_in_it(backend: Backend, ws: Path
                                                            ) -> None:
    marker = secrets.token_hex(8)
    shell = await backend.shell(workspace=ws, env={"AGENTD_MARK": marker}, limits=LIMITS)
    try:
        await shell.run("sleep 1000 &")  # a job left in the background
        result = await shell.run("sleep 1000", timeout_s=1)
        assert result.timed_out and result.killed == "wall_time" and result.exit_code is None
        await all_gone(marker)
        after = await shell.run("echo back")
        assert after.stdout == "back\n" and shell.restarts == 1
        assert "was killed (wall_time)" in after.stderr
    finally:
        await shell.close()
    await all_gone(marker)


async def test_output_flood_is_capped_and_killed(shell: PersistentShell) -> None:
    result = await shell.run("yes")
    assert result.truncated and result.killed == "output" and result.exit_code is None
    assert len(result.stdout) <= LIMITS.output_bytes
    big = await shell.run("head -c 15000 /dev/zero | tr '\\0' x; echo")
    assert big.stdout == "x" * 15000 + "\n" and not big.truncated


async def test_large_output_under_the_cap_and_both_streams(shell: PersistentShell) -> None:
    result = await shell.run("for i in $(seq 1000); do echo out$i; echo err$i >&2; done")
    assert result.stdout.splitlines()[-1] == "out1000"
    assert result.stderr.splitlines()[-1] == "err1000"
    assert not result.truncated


async def test_isolation_holds_in_the_shell(shell: PersistentShell, backend: Backend
                                            ) -> None:
    result = await shell.run("cat /etc/shadow; id -u")
    assert "root:" not in result.stdout
    if os.geteuid() == 0:
        assert result.stdout.strip().splitlines()[-1] == "65534"
    if backend.isolated:
        assert (await shell.run("test -e /root || echo no-root")).stdout == "no-root\n"


async def test_closed_shell_refuses_and_leaves_nothing(backend: Backend, ws: Path) -> None:
    marker = secrets.token_hex(8)
    shell = await backend.shell(workspace=ws, env={"AGENTD_MARK": marker}, limits=LIMITS)
    await shell.run("sleep 1000 &")
    await shell.close()
    await all_gone(marker)
    with pytest.raises(ToolError) as info:
        await shell.run("echo hi")
    assert info.value.code == "shell_closed"


async def test_commands_run_one_at_a_time(shell: PersistentShell) -> None:
    results = await asyncio.gather(*(shell.run(f"echo {i}") for i in range(20)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]


async def test_pool(backend: Backend, ws: Path) -> None:
    made = 0

    async def factory() -> PersistentShell:
        nonlocal made
        made += 1
        return await backend.shell(workspace=ws, limits=LIMITS)

    pool = ShellPool(idle_s=60)
    try:
        first, second = await asyncio.gather(pool.get("agent/s1", factory),
                                             pool.get("agent/s1", factory))
        assert first is second and made == 1
        await first.run("cd /tmp")
        again = await pool.get("agent/s1", factory)
        assert (await again.run("pwd")).stdout == "/tmp\n"
        other = await pool.get("agent/s2", factory)
        assert other is not first and made == 2 and len(pool) == 2
        await pool.close("agent/s2")
        assert other.closed and "agent/s2" not in pool
        pool.idle_s = 0.0
        assert await pool.expire() == ["agent/s1"]
        assert first.closed and len(pool) == 0
        fresh = await pool.get("agent/s1", factory)
        assert fresh is not first and made == 3
    finally:
        await pool.close_all()
    assert len(pool) == 0 and fresh.closed
