"""The stdio transport of a local MCP server that runs in the agent's sandbox.

The SDK's ``stdio_client`` starts the server itself, as a plain child of the daemon:
with the daemon's user, its files and its network. An agent chooses that command, so it
must not run there. Here the server is a sandboxed process (:meth:`Backend.spawn`:
the agent's backend, workspace, limits and network grant) and this module only bridges
its pipes to the session's streams, as the SDK's transport does: one JSON-RPC message a
line each way, stderr kept for error messages, and at the end stdin closed, a short
grace, then every process of the sandbox killed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams
    from mcp.shared.message import SessionMessage

    from agentd.sandbox.process import Child
    from agentd.tools.mcp_config import MCPServer

__all__ = ["MAX_LINE", "Spawner", "StderrTail", "sandboxed_stdio"]

#: The longest message line a server may send (a larger one ends the connection).
MAX_LINE = 16 * 1024 * 1024
#: Characters of stderr kept.
STDERR_TAIL = 2000
#: After stdin is closed, how long the server has to exit before it is killed.
EXIT_GRACE_S = 2.0

#: Starts a configured stdio server in the owner's sandbox.
Spawner = Callable[["MCPServer"], Awaitable["Child"]]


class StderrTail:
    """The last bytes a server wrote to stderr."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def add(self, data: bytes) -> None:
        self._buf += data
        del self._buf[:-STDERR_TAIL]

    def tail(self) -> str:
        return self._buf.decode(errors="replace").strip()[-STDERR_TAIL:]

    def close(self) -> None:
        pass


def _parse(line: bytes) -> SessionMessage | Exception:
    import mcp_types as types
    from mcp.shared.message import SessionMessage

    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line,
                                                                          by_name=False))
    except ValueError as exc:
        return exc


@contextlib.asynccontextmanager
async def sandboxed_stdio(child: Child, stderr: StderrTail
                          ) -> AsyncIterator[TransportStreams]:
    """The session's streams over a started sandboxed server ``child``; closing the
    context ends the server and everything it started."""
    from mcp.shared.message import SessionMessage

    read_writer, read_stream = anyio.create_memory_object_stream[
        SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    assert child.stdin is not None, "a server is spawned with a stdin pipe"
    stdin = child.stdin

    async def stdout_reader() -> None:
        buffer = b""
        async with read_writer:
            while True:
                chunk = await child.stdout.read()
                if not chunk:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_LINE:
                    stderr.add(b"\n[agentd: a message over 16 MiB; connection closed]")
                    return
                for line in lines:
                    if line.strip():
                        try:
                            await read_writer.send(_parse(line))
                        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                            return

    async def stderr_reader() -> None:
        while chunk := await child.stderr.read():
            stderr.add(chunk)

    async def stdin_writer() -> None:
        try:
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True,
                                                           exclude_unset=True)
                    await stdin.write(data.encode() + b"\n")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_writer.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stdout_reader)
        tg.start_soon(stderr_reader)
        tg.start_soon(stdin_writer)
        try:
            yield read_stream, write_stream
        finally:
            with anyio.CancelScope(shield=True):
                read_stream.close()
                write_stream.close()
                stdin.close()  # the spec's first step: the server sees EOF and exits
                with anyio.move_on_after(EXIT_GRACE_S):
                    await child.proc.wait()  # (our pipes, not asyncio's: exit only)
                # What it wrote to stderr on its way out, which the reader may not have
                # read: it is cancelled with the connection, and the end of stdout (or
                # a write to a closed stdin) can end the connection first.
                stderr.add(child.stderr.drain())
                await child.close()  # then every process of its sandbox is killed
            tg.cancel_scope.cancel()
