"""The newcomer path, checked: every shell and Python example of README.md and docs/
is run literally against a live daemon, or listed below with the reason it is not.

Each fenced block of README.md and docs/**/*.md is read with its file, line and
language. Shell blocks (```bash, sh, shell, console, and untagged blocks whose lines are
commands: ``agentd ...``, ``curl ...``, a ``$ `` prompt) and ```python blocks are
*runnable*; everything else (TOML, JSON, tables, trees, transcripts without a command)
is a fragment by its language and is not run.

A runnable block is run, in its page's order, unless :data:`NOT_RUN` lists it with a
reason (:data:`PAGES_NOT_RUN`: a whole page). So a new example runs as soon as it is
written, and fails the test until it runs as written or is listed; an entry that
matches no block fails :func:`test_every_example_is_run_or_listed`. How a block runs:

- One ``agentd serve`` process for the module, in a fresh home (the embedded default:
  SQLite, the offline ``scripted`` model, the ``demo`` agent). ``HOME`` is a temp folder
  and ``AGENTD_HOME`` is ``$HOME/.agentd``, so ``~/.agentd/token`` is the daemon's
  token; ``AGENTD_PORT`` is the daemon's port (the CLI and ``Client()`` find it there),
  and ``localhost:8721`` in an example becomes that port (the only rewrite).
- The venv's ``bin`` is first on ``PATH`` (``agentd``, ``python``) and the block's cwd
  is a folder of its page with a ``.venv`` link to the venv (``.venv/bin/agentd``).
- A shell block runs with ``bash -e -o pipefail`` and must exit 0. A ``$ `` prompt
  marks the commands of a transcript; in an untagged block, a line that is not a
  command (nor the continuation of one) is output and is not run. Variables a block
  sets are there for the next blocks of its page (``RUN=$(agentd send ...)``).
- A Python block runs as a file with the venv's python and must exit 0.
- :data:`LINES_NOT_RUN`: lines of a block that runs left out (placeholder ids).
- :data:`PAGE_SETUP`: commands before a page's blocks, for what its prose takes as
  given (an agent ``support``, a ``turns.json``); :data:`PYTHON_PRELUDE`: code before
  each of a page's Python blocks (python-client.md's ``client = Client()``).
- :data:`EXPECTED`: what a line's own comment says it prints must be in the output.
- Between pages the daemon is reset: every agent is deleted and ``demo`` made again.
- :data:`OWN_DAEMON` blocks start and stop a daemon themselves (``agentd start`` ...
  ``agentd stop``): they run in a home of their own, without the module's daemon.

docs/contributing.md ("Examples in the docs") says how to classify a new example.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port
from tests.daemons import SRC, Daemon

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
#: The venv that runs the tests: its bin goes first on PATH, ``.venv`` links to it.
VENV = Path(sys.prefix)
TIMEOUT_S = 120.0  # a liveness bound for one block, never a timing check

SHELL_LANGS = frozenset({"bash", "sh", "shell", "console", "zsh"})
PYTHON_LANGS = frozenset({"python", "py"})

#: A line an untagged block runs: a command (``agentd ...``, ``curl ...``), maybe after
#: ``VAR=value`` assignments, or ``VAR=$(...)``.
_COMMAND = re.compile(
    r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
    r"(?:agentd|curl|sqlite3|pg_dump|pg_restore|pip|apt-get|python3?|bash|export|echo"
    r"|printf|cd|jq)(?:\s|$)"
    r"|^[A-Za-z_][A-Za-z0-9_]*=\$\(")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")

# -- the blocks not run ---------------------------------------------------------------
#
# (file, a substring of the block, its first line where that is unique) -> why not.

_API_KEY = "needs a real model's API key (openai:...)"
_FOREGROUND = ("starts a daemon in the foreground (agentd serve): the test's daemon "
               "stands for it")
_SIGNATURE = "a signature, not a program"
_SNIPPET = "a fragment: names defined elsewhere (token, on_progress, ...), another port"
_CODEBASE = "a fragment of agentd's own code (how to add a capability), not a program"
_TELEGRAM = "needs a Telegram bot (its token) and a public address"
_NODE = "needs Node.js packages from npm (the MCP Inspector / conformance suite)"
_FOLLOWS = ("follows new events until Ctrl-C (or --count of them): needs another "
            "terminal's runs")
_OUTSIDE = "reaches a real outside address (hooks.example.com)"
_CLUSTER = ("needs a Kubernetes cluster (there is none here): tests/deploy/test_helm.py "
            "renders the chart with helm and validates its manifests")

#: Whole pages whose blocks are not run: (page) -> why.
PAGES_NOT_RUN: dict[str, str] = {
    "docs/benchmarks.md": "benchmarks: minutes of CPU each, on a machine set up for "
                          "them; their figures are the page",
}

NOT_RUN: dict[tuple[str, str], str] = {
    ("README.md", "pip install -e . && .venv/bin/agentd serve"):
        "installs agentd and starts the daemon in the foreground: the test's daemon "
        "stands for it (the venv is the one running the tests)",
    ("README.md", "bash scripts/test.sh"): "runs the whole test suite",
    ("docs/adapters.md", "agentd create support --model adapter:my_agents"):
        "needs an adapter module (my_agents) on the daemon's path and allowed in "
        "agentd.toml",
    ("docs/browser.md", "pip install 'agentd[browser]'"):
        "installs packages (pip, apt-get)",
    ("docs/browser.md", "agentd create researcher"): "needs [browser] enabled and Chromium",
    ("docs/channels.md", "export TELEGRAM_SUPPORT_BOT_TOKEN"): _TELEGRAM,
    ("docs/channels.md", "curl -X PATCH"): _TELEGRAM,
    ("docs/channels.md", "api.telegram.org"): _TELEGRAM,
    ("docs/cli.md", "agentd create mybot --tool calculator"):
        "agentd start ... agentd stop, as docs/README.md's block, which runs (in a home "
        "of its own)",
    ("docs/cli.md", "agentd serve --host 0.0.0.0"): _FOREGROUND,
    ("docs/cli.md", "AGENTD_HOME=/srv/agentd"):
        "starts a second daemon in /srv/agentd on port 9000",
    ("docs/cli.md", "agentd stop --timeout 5 --force"):
        "stops the daemon the later blocks use (docs/README.md's block runs agentd stop)",
    ("docs/cli.md", "agentd is running (pid 4242)"): "the output of agentd status",
    ("docs/cli.md", "agentd edit demo"): "opens an editor: interactive",
    ("docs/cli.md", "agentd tail demo\n"): _FOLLOWS,
    ("docs/cli.md", "agentd tail --all"): _FOLLOWS,
    ("docs/cli.md", "agentd logs -f --level warning"):
        "reads $AGENTD_HOME/agentd.log, which only agentd start writes (the test's "
        "daemon logs elsewhere), and -f follows it until Ctrl-C",
    ("docs/cli.md", "agentd delete-session demo user:42"):
        "deletes the sessions the page's later examples use (user:42, cli); its first "
        "line asks for a confirmation",
    ("docs/cli.md", "agentd compact demo user:42\n"):
        "needs a session with more turns than compaction keeps (the page's user:42 was "
        "restored to seq 0 above)",
    ("docs/cli.md", "agentd decide r_0192"):
        "needs a run waiting for a decision (a call of unknown outcome after a crash)",
    ("docs/cli.md", "agentd approvals --agent ops"):
        "needs a run waiting for approval (placeholder ids: ap_01a2..., $ID)",
    ("docs/cli.md", "agentd skill install ./pdf-tools"): "needs a skill folder ./pdf-tools",
    ("docs/cli.md", "agentd webhook add demo https://hooks.example.com"): _OUTSIDE,
    ("docs/contributing.md", ".venv/bin/lint-imports"):
        "the project's checks over the whole tree (lint, types, layers)",
    ("docs/contributing.md", "bash scripts/test.sh  "): "runs the whole test suite",
    ("docs/contributing.md", ".venv/bin/pytest -n 4"): "runs the test suite",
    ("docs/contributing.md", "AGENTD_TEST_POSTGRES_URL=postgresql"): "needs PostgreSQL",
    ("docs/contributing.md", ".venv/bin/pytest tests/docs/test_docs_examples.py"):
        "runs this test",
    ("docs/contributing.md", "sudo bash scripts/install-pgvector.sh"):
        "installs system packages as root",
    ("docs/contributing.md", "class Failures:"): _CODEBASE,
    ("docs/contributing.md", "self.failures = Failures("): _CODEBASE,
    ("docs/contributing.md", "MIGRATIONS.append(("): _CODEBASE,
    ("docs/contributing.md", "@dataclass(kw_only=True, slots=True)"): _CODEBASE,
    ("docs/operations.md", "AGENTD_TOKEN=... agentd serve"): _FOREGROUND,
    ("docs/operations.md", "agentd start            # returns once /health"):
        "agentd start / status / stop: docs/README.md's block runs start and stop (in a "
        "home of its own), docs/cli.md's agentd status",
    ("docs/operations.md", "pip install 'agentd[otel]'"):
        "installs packages and starts a daemon in the foreground that exports to an "
        "OTLP collector (tests/telemetry runs that against real receivers)",
    ("docs/operations.md", "podman build -t agentd ."):
        "builds and runs the image: tests/deploy/test_image.py does, on a Debian base "
        "made from Debian's packages (no registry here)",
    ("docs/operations.md", "podman-compose up -d"):
        "brings up compose.yaml: tests/deploy/test_compose.py does, with images built "
        "there",
    ("docs/operations.md", "registry.example.com/agentd:0.1.0 . && podman push"): _CLUSTER,
    ("docs/operations.md", "print(h['sandbox'], h['sandboxes'])"): _CLUSTER,
    ("docs/operations.md", "image.tag=0.2.0 --wait"): _CLUSTER,
    ("docs/operations.md", "kubectl -n agents rollout status"): _CLUSTER,
    ("docs/operations.md", "pg_dump --format=custom \"$(kubectl"): _CLUSTER,
    ("docs/operations.md", "sqlite3.connect('/var/lib/agentd/home/agentd.db').backup"):
        _CLUSTER,
    ("docs/operations.md", "tar -C /var/lib/agentd/home -cf -"): _CLUSTER,
    ("docs/operations.md", "pg_restore --clean --if-exists"): _CLUSTER,
    ("docs/operations.md", "kubectl apply -f agentd-restore.yaml"): _CLUSTER,
    ("docs/operations.md", ".backup /backups/"): "writes to /backups (the operator's)",
    ("docs/operations.md", "pg_dump -Fc"): "needs PostgreSQL",
    ("docs/protocols/a2a.md", "from a2a.client import"): _SNIPPET,
    ("docs/protocols/a2a.md", "agentd serve --port 9931 &"):
        "starts a second daemon (port 9931) in the background",
    ("docs/protocols/mcp.md", "import httpx2"): _SNIPPET,
    ("docs/protocols/mcp.md", "npx @modelcontextprotocol/inspector"): _NODE,
    ("docs/protocols/mcp.md", "npm install --prefix /tmp/mcpc"): _NODE,
    ("docs/protocols/websocket.md", "from websockets.asyncio.client import"): _SNIPPET,
    ("docs/python-client.md", "Client(base_url=None, token=None"): _SIGNATURE,
    ("docs/python-client.md", "for frame in client.follow("):
        "follows the session until interrupted (and the page deletes user:1 above)",
    ("docs/python-client.md", "for frame in client.feed():"):
        "follows every session's events until interrupted",
    ("docs/python-client.md", "cp = client.checkpoint("):
        "checkpoints session user:1, which the page's sessions example deletes above; "
        "restores and forks at placeholder seqs",
    ("docs/python-client.md", "for child in client.subtasks("):
        "a fragment: `run` is a run that started subtasks",
    ("docs/python-client.md", "skill = client.install_skill("):
        "needs a skill folder ./pdf-tools (and /srv/skills/pdf-tools on the daemon)",
    ("docs/python-client.md", "hook = client.create_webhook("):
        _OUTSIDE + "; webhooks are off until the operator allows a host",
    ("docs/python-client.md", "for request in client.approvals():"):
        "needs a run waiting for approval (agent ops: a placeholder)",
    ("docs/python-client.md", 'client.set_heartbeat("ops"'):
        "a placeholder agent (ops) with a workspace file HEARTBEAT.md",
    ("docs/termo.md", "termo-agent --adapter my_agent"):
        "starts termo-agent and a daemon in the foreground, with an adapter module",
    ("docs/tools.md", "agentd create helper --tool word_count"):
        "needs my_tools on the daemon's path ([tools] modules in agentd.toml)",
}

#: Lines of blocks that run, not run themselves: (file, a substring of the line) -> why.
LINES_NOT_RUN: dict[tuple[str, str], str] = {
    ("docs/cli.md", "c_0192c3d4e5f6a1b2c3d4e5f6a7"): "a placeholder checkpoint id",
    ("docs/cli.md", "r_0192c3d4e5f6a1b2c3d4e5f6a7"): "a placeholder run id",
    ("docs/cli.md", "agentd top --interval"): "refreshes in place until Ctrl-C",
    ("docs/cli.md", "agentd set demo model=openai:gpt-4.1-mini"):
        _API_KEY + ": demo would answer the page's later sends with it",
}

#: Code put before each Python block of a page, for what its prose gives every example:
#: page -> (code, why).
PYTHON_PRELUDE: dict[str, tuple[str, str]] = {
    "docs/python-client.md": (
        "from pathlib import Path\n"
        "from agentd.client import APIError, Client, ClientError, ConnectionFailed\n"
        "client = Client()\n",
        "the page's examples are calls on the `client` of its first one"),
    "docs/protocols/openai.md": (
        "from pathlib import Path\ntoken_file = Path.home() / '.agentd' / 'token'\n",
        "`token_file`: the page says to use a daemon token as the API key"),
}

#: Commands run before a page's blocks, for what its prose takes as given:
#: page -> (commands, why).
PAGE_SETUP: dict[str, tuple[str, str]] = {
    "docs/api.md": (
        "python -c 'from PIL import Image; "
        """Image.new("RGB", (64, 48), "red").save("photo.png")'""",
        "the image the upload example sends (-F file=@photo.png)"),
    "docs/cli.md": (
        """echo '[{"text": "Hello"}]' > turns.json
echo 'I answer briefly.' > persona.txt
echo 'Deploys are on Mondays.' > notes.txt
python -c 'from PIL import Image; Image.new("RGB", (64, 48), "red").save("photo.png")'""",
        "the files the examples read (--script turns.json, < persona.txt, < notes.txt, "
        "--attach photo.png)"),
    "docs/protocols/openai.md": ("agentd create support",
                                 "the page's examples talk to an agent `support`"),
    "docs/protocols/langgraph.md": ("agentd create support",
                                    "the page's examples talk to an agent `support`"),
}

#: Blocks that start (and stop) a daemon themselves: run in a home of their own.
OWN_DAEMON: frozenset[tuple[str, str]] = frozenset({
    ("docs/README.md", "agentd start"),
})

#: (file, a substring of a command line) -> what its comment says it prints.
EXPECTED: dict[tuple[str, str], str] = {
    ("README.md", "# echo: hello"): "echo: hello",
    ("README.md", "# calculator returned: 42"): "calculator returned: 42",
    ("docs/python-client.md", "# completed calculator returned: 42"):
        "completed calculator returned: 42",
}


# -- reading the docs ---------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str
    text: str  # dedented by the fence's indentation

    @property
    def kind(self) -> str:
        """"shell", "python" or "text" (not runnable)."""
        if self.lang in SHELL_LANGS:
            return "shell"
        if self.lang in PYTHON_LANGS:
            return "python"
        if not self.lang and any(_COMMAND.match(line.removeprefix("$ ").strip())
                                 for line in self.text.splitlines()):
            return "shell"
        return "text"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line} ({self.lang or 'untagged'})"

    def matches(self, key: str) -> bool:
        first = next((line for line in self.text.splitlines() if line.strip()), "")
        return key in first or key in self.text


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def extract(path: Path, root: Path = ROOT) -> list[Block]:
    """The fenced blocks of a Markdown file, in order."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    rel = path.relative_to(root).as_posix()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening.groups()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if closing and closing.group(2).startswith(fence) and not closing.group(3):
                break
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        blocks.append(Block(rel, i + 1, lang.lower(), "\n".join(body)))
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in extract(page)]


def listed(block: Block, keys: dict[tuple[str, str], str] | frozenset[tuple[str, str]]
           ) -> bool:
    return any(file == block.file and block.matches(key) for file, key in keys)


def to_run(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.kind != "text" and b.file not in PAGES_NOT_RUN
            and not listed(b, NOT_RUN)]


def shell_script(block: Block) -> str:
    """The commands of a shell block: a transcript's ``$ `` lines (and what continues
    them); in an untagged block, its command lines; else every line."""
    lines = block.text.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    kept: list[str] = []
    continued = False
    for line in lines:
        if any(file == block.file and key in line for file, key in LINES_NOT_RUN):
            kept.append(f"# (not run: {line.strip()})")
            continued = line.rstrip().endswith("\\")
            continue
        if continued:
            kept.append(line)
        elif prompted and line.startswith("$ "):
            kept.append(line[2:])
        elif not prompted and (block.lang or _COMMAND.match(line.strip())
                               or line.lstrip().startswith("#")):
            kept.append(line)
        else:
            continue
        continued = line.rstrip().endswith("\\")
    return "\n".join(kept)


# -- the reader itself ----------------------------------------------------------------


def test_blocks_are_read_with_their_kind_and_commands(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Intro\n\n```\nagentd send demo hi   # echo: hi\nwaiting: queued\n"
        "RUN=$(agentd send demo x --no-wait); agentd run \"$RUN\"\n```\n\n"
        "1. A step:\n   ```\n   $ agentd usage\n   AGENT  MODEL\n   demo   scripted\n"
        "   ```\n\n```\nGET /v1/agents   -> Agent\n```\n\n"
        "```toml\n[x]\n```\n\n```python\nprint(1)\n```\n")
    blocks = extract(page, tmp_path)
    assert [(b.line, b.kind) for b in blocks] == [
        (3, "shell"), (10, "shell"), (16, "text"), (20, "text"), (24, "python")]
    # Output lines of an untagged block and of a transcript are not run.
    assert shell_script(blocks[0]).splitlines() == [
        "agentd send demo hi   # echo: hi",
        'RUN=$(agentd send demo x --no-wait); agentd run "$RUN"']
    assert shell_script(blocks[1]) == "agentd usage"  # (dedented from the list item)


# -- the classification ---------------------------------------------------------------


def test_every_example_is_run_or_listed() -> None:
    """A runnable block is run unless NOT_RUN lists it; every NOT_RUN / OWN_DAEMON /
    EXPECTED entry names a block that exists (one block, for NOT_RUN and OWN_DAEMON)."""
    blocks = all_blocks()
    runnable = [b for b in blocks if b.kind != "text" and b.file not in PAGES_NOT_RUN]
    assert len(runnable) > 20, "the extractor found almost no examples"
    problems: list[str] = []
    for (file, key), reason in NOT_RUN.items():
        found = [b for b in runnable if b.file == file and b.matches(key)]
        if len(found) != 1:
            problems.append(f"NOT_RUN {file!r} {key!r} ({reason}) matches "
                            f"{len(found)} runnable blocks, not one")
    for file, key in OWN_DAEMON:
        found = [b for b in to_run(blocks) if b.file == file and b.matches(key)]
        if len(found) != 1:
            problems.append(f"OWN_DAEMON {file!r} {key!r} matches {len(found)} blocks run")
    for (file, key), why in LINES_NOT_RUN.items():
        if not any(b.file == file and b.kind == "shell" and key in line
                   for b in to_run(blocks) for line in b.text.splitlines()):
            problems.append(f"LINES_NOT_RUN {file!r} {key!r} ({why}) is on no line of a "
                            "shell block run")
    for page in [*PAGES_NOT_RUN, *PAGE_SETUP, *PYTHON_PRELUDE]:
        if not (ROOT / page).is_file():
            problems.append(f"{page} is listed but does not exist")
    for file, key in EXPECTED:
        if not any(b.file == file and key in line for b in to_run(blocks)
                   for line in b.text.splitlines()):
            problems.append(f"EXPECTED {file!r} {key!r} is on no line of a block run")
    assert not problems, "\n".join(problems)


# -- running them ---------------------------------------------------------------------


@dataclass
class Site:
    """Where a page's blocks run: the environment and the daemon's port."""

    home: Path  # $HOME; the daemon's home is $HOME/.agentd
    port: int
    env: dict[str, str]
    demo: dict[str, object] | None = None  # the demo agent as the daemon made it
    used: bool = False  # a page ran on it (the next one resets it first)


def block_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENTD_", "PYTEST_")) and not k.endswith("_API_KEY")}
    env.update(
        HOME=str(home), AGENTD_HOME=str(home / ".agentd"), AGENTD_PORT=str(port),
        PATH=os.pathsep.join([str(VENV / "bin"), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])]),
        PYTHONUNBUFFERED="1", NO_COLOR="1", TERM="dumb", COLUMNS="120",
        # `agentd console --open` opens no browser on a developer's desktop.
        BROWSER="true",
    )
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(var, None)
    return env


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("docs-user")
    proc = Daemon(home / ".agentd", home / "agentd.log", env={}, args=())
    try:
        proc.start()
        site = Site(home, proc.port, block_env(home, proc.port))
        site.demo = demo_definition(site)
        yield site
    finally:
        proc.cleanup()


def reset(site: Site) -> None:
    """Every agent deleted (their sessions, runs and memory go too), ``demo`` made again
    as the daemon made it: a page starts where a newcomer does."""
    token = (site.home / ".agentd" / "token").read_text().strip()
    with httpx.Client(base_url=f"http://127.0.0.1:{site.port}", timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        for agent in client.get("/v1/agents", params={"limit": 1000}).json()["agents"]:
            response = client.delete(f"/v1/agents/{agent['name']}")
            assert response.status_code == 204, response.text
        response = client.post("/v1/agents", json=site.demo)
        assert response.status_code == 201, response.text


def demo_definition(site: Site) -> dict[str, object]:
    token = (site.home / ".agentd" / "token").read_text().strip()
    agent = httpx.get(f"http://127.0.0.1:{site.port}/v1/agents/demo", timeout=60,
                      headers={"Authorization": f"Bearer {token}"}).json()
    return {k: agent[k] for k in ("name", "model", "instructions", "tools", "settings")}


def run_block(block: Block, site: Site, cwd: Path, index: int) -> str:
    """Run one block; fail the test with its output if it fails. Its output."""
    state = cwd / ".block-env"
    text = shell_script(block) if block.kind == "shell" else block.text
    for address in ("localhost:8721", "127.0.0.1:8721"):
        text = text.replace(address, f"127.0.0.1:{site.port}")
    if block.kind == "shell":
        path = cwd / f"block{index}.sh"
        # set -a: what a block assigns is exported, and saved for the next blocks.
        path.write_text(f"set -a\n[ -f {state} ] && . {state}\n"
                        f"trap 'export -p > {state}' EXIT\n{text}\n")
        command = ["bash", "-e", "-o", "pipefail", str(path)]
    else:
        path = cwd / f"block{index}.py"
        prelude = PYTHON_PRELUDE.get(block.file, ("", ""))[0]
        path.write_text(prelude + text + "\n")
        command = [str(VENV / "bin" / "python"), str(path)]
    # A session of its own: what the block leaves running is killed with it.
    with subprocess.Popen(command, cwd=cwd, env=site.env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{block.where} did not end within {TIMEOUT_S:g}s:\n{block.text}"
                        f"\n--- output:\n{stdout}{stderr}", pytrace=False)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    output = stdout + stderr
    print(f"--- {block.where}\n{output}")  # (shown when a later block fails)
    if proc.returncode != 0:
        pytest.fail(f"{block.where} exited with {proc.returncode}:\n{block.text}\n"
                    f"--- output:\n{output}", pytrace=False)
    for (file, key), text in EXPECTED.items():
        if file == block.file and key in block.text and text not in stdout:
            pytest.fail(f"{block.where}: the line with {key!r} says it prints {text!r}; "
                        f"the output:\n{output}", pytrace=False)
    return output


def run_own_daemon(block: Block, tmp_path: Path) -> None:
    """A block that starts its own daemon (``agentd start``): a fresh home, a free
    port; whatever it left running is stopped at the end."""
    home = tmp_path / "own"
    home.mkdir()
    cwd = tmp_path / "own-cwd"
    cwd.mkdir()
    (cwd / ".venv").symlink_to(VENV)
    site = Site(home, free_port(), block_env(home, 0))
    site.env["AGENTD_PORT"] = str(site.port)
    try:
        run_block(block, site, cwd, 0)
    finally:
        subprocess.run([str(VENV / "bin" / "agentd"), "stop", "--force"], env=site.env,
                       cwd=cwd, capture_output=True, timeout=TIMEOUT_S)


_PAGES = sorted({b.file for b in to_run(all_blocks())},
                key=lambda f: (f != "README.md", f))


@pytest.mark.parametrize("page", _PAGES)
def test_page_examples_run(page: str, daemon: Site, tmp_path: Path) -> None:
    blocks = to_run(extract(ROOT / page))
    if daemon.used:
        reset(daemon)
    daemon.used = True
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / ".venv").symlink_to(VENV)
    if page in PAGE_SETUP:
        setup = Block(page, 0, "bash", PAGE_SETUP[page][0])
        run_block(setup, daemon, cwd, -1)
    for index, block in enumerate(blocks):
        if listed(block, OWN_DAEMON):
            run_own_daemon(block, tmp_path)
        else:
            run_block(block, daemon, cwd, index)

