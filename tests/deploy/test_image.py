"""The container image (Containerfile), built and run with podman as a user would: its
Debian base made from Debian's packages with mmdebstrap (no registry is reachable
here), the image built with that base as its build argument, then run with its data
on a volume: a non-root daemon, healthy, that runs a turn with a command in
bubblewrap inside the container, and after a restart finds the session intact.
Without the documented security options it still serves, saying why bubblewrap is
unusable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.allow_network]

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/agentd-base:bookworm"
IMAGE = "localhost/agentd:test"
#: What bubblewrap needs inside a container (docs/operations.md, "Containers").
SANDBOX_OPTS = ["--security-opt", "seccomp=unconfined", "--security-opt", "unmask=/proc/*"]
#: The host's CA bundle: where a TLS-inspecting proxy's CA is (this project's machines'
#: egress), given to the build's pip.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _tools() -> dict[str, str]:
    found = {name: shutil.which(name) for name in ("podman", "mmdebstrap", "runc")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail(f"CI must have {', '.join(missing)} (scripts/test.sh installs them)")
        pytest.skip(f"no {', '.join(missing)} here")
    if os.geteuid() != 0:
        pytest.skip("the image test runs podman as root (as CI does)")
    return {k: v for k, v in found.items() if v is not None}


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    tools = _tools()
    conf = tmp_path_factory.mktemp("containers") / "containers.conf"
    # This machine's way (the words): runc, cgroupfs, no default ulimits (the
    # default asks for a descriptor limit above the host's hard one).
    conf.write_text('[containers]\ndefault_ulimits = []\n'
                    '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n')
    os.environ["CONTAINERS_CONF"] = str(conf)
    try:
        yield [tools["podman"]]
    finally:
        os.environ.pop("CONTAINERS_CONF", None)


def _run(cmd: list[str], timeout: float = 600, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[:4])}... exited {done.returncode}:\n"
                             f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done


def _base(podman: list[str], tmp: Path) -> None:
    """The image's base, made from Debian's packages (reused once made)."""
    if _run([*podman, "image", "exists", BASE], check=False).returncode == 0:
        return
    tar = tmp / "base.tar"
    # As Debian's own slim image: no documentation or locales, apt's caches cleaned.
    _run(["mmdebstrap", "--variant=minbase", "--include=ca-certificates",
          "--dpkgopt=path-exclude=/usr/share/doc/*",
          "--dpkgopt=path-exclude=/usr/share/man/*",
          "--dpkgopt=path-exclude=/usr/share/locale/*",
          "--dpkgopt=path-include=/usr/share/locale/locale.alias",
          "--customize-hook=chroot \"$1\" apt-get clean",
          "bookworm", str(tar), "http://deb.debian.org/debian"], timeout=900)
    _run([*podman, "import", str(tar), BASE])
    tar.unlink()


@pytest.fixture(scope="module")
def image(podman: list[str], tmp_path_factory: pytest.TempPathFactory) -> str:
    _base(podman, tmp_path_factory.mktemp("base"))
    build = [*podman, "build", "--format", "docker", "--build-arg", f"BASE={BASE}",
             "-t", IMAGE, "-f", str(ROOT / "Containerfile")]
    if HOST_CA.exists():
        build += ["--volume", f"{HOST_CA}:/run/host-ca.crt:ro",
                  "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    _run([*build, str(ROOT)], timeout=1800)
    return IMAGE


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Container:
    def __init__(self, podman: list[str], image: str, *, opts: list[str],
                 volume: str | None = None) -> None:
        self.podman = podman
        self.name = f"agentd-test-{uuid.uuid4().hex[:8]}"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        volume_opts = ["-v", f"{volume}:/var/lib/agentd"] if volume else []
        _run([*podman, "run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:8721",
              *volume_opts, *opts, image])

    def health(self) -> dict[str, Any]:
        def up() -> dict[str, Any] | None:
            try:
                reply = httpx.get(f"{self.url}/health", timeout=5)
            except httpx.HTTPError:
                return None
            got: dict[str, Any] | None = reply.json() if reply.status_code == 200 else None
            return got

        found: dict[str, Any] = wait_until(up, within=180, interval=0.5,
                                           what=f"{self.name} healthy")
        return found

    def exec(self, *cmd: str) -> str:
        return _run([*self.podman, "exec", self.name, *cmd]).stdout

    def token(self) -> str:
        return self.exec("cat", "/var/lib/agentd/token").strip()

    def logs(self) -> str:
        done = _run([*self.podman, "logs", self.name], check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        _run([*self.podman, "rm", "-f", "-t", "5", self.name], check=False)


def _events(api: httpx.Client) -> list[dict[str, Any]]:
    reply = api.get("/v1/agents/ops/sessions/main/events")
    assert reply.status_code == 200, reply.text
    events: list[dict[str, Any]] = reply.json()["events"]
    return events


def test_the_image(podman: list[str], image: str) -> None:
    """One test (one build, on one xdist worker): the image's size, then the image
    run as documented, then without the security options."""
    size = json.loads(_run([*podman, "image", "inspect", image]).stdout)[0]["Size"]
    # (docs/operations.md states the size; this guards against a stray layer.)
    assert size < 900 * 1024 * 1024, f"the image is {size / 2**20:.0f} MiB"
    _serves_sandboxes_and_keeps_its_data(podman, image)
    _without_the_options_it_says_why_bubblewrap_is_unusable(podman, image)


def _serves_sandboxes_and_keeps_its_data(podman: list[str], image: str) -> None:
    volume = f"agentd-test-{uuid.uuid4().hex[:8]}"
    box = Container(podman, image, opts=SANDBOX_OPTS, volume=volume)
    try:
        health = box.health()
        assert health["sandbox"] == "bubblewrap" and health["sandbox_isolated"], health
        assert box.exec("id", "-u").strip() != "0"  # the daemon's user: not root
        # tini is pid 1 (it reaps the sandboxes' orphans), the daemon its child.
        assert box.exec("cat", "/proc/1/comm").strip() == "tini"
        api = httpx.Client(base_url=box.url, timeout=120,
                           headers={"Authorization": f"Bearer {box.token()}"})
        made = api.post("/v1/agents", json={
            "name": "ops", "model": "scripted", "tools": ["shell"], "settings": {
                "policy": {"rules": [{"tool": "shell", "action": "allow"}]},
                "script": [{"tool_calls": [{"name": "shell", "arguments": {
                    "command": "hostname; echo kept > note.txt; cat note.txt"}}]},
                    {"text": "done"}]}})
        assert made.status_code == 201, made.text
        run = api.post("/v1/agents/ops/sessions/main/messages",
                       json={"content": "go", "wait": True})
        assert run.status_code == 200 and run.json()["status"] == "completed", \
            (run.text, box.logs()[-3000:])
        [finished] = [e["data"] for e in _events(api) if e["kind"] == "tool.finished"]
        assert finished["sandbox"] == {"backend": "bubblewrap"}, finished
        assert finished["output"].splitlines()[1:3] == ["sandbox", "kept"], finished
        before = _events(api)
        # The image's healthcheck (kept with --format docker) passes.
        assert _run([*podman, "healthcheck", "run", box.name], check=False).returncode == 0
        _run([*podman, "restart", "-t", "20", box.name])
        box.health()
        api.headers["Authorization"] = f"Bearer {box.token()}"
        after = _events(api)
        # The session, whole, from the volume (and the graceful stop's checkpoint).
        assert after[:len(before)] == before
        assert [e["kind"] for e in after[len(before):]] == ["checkpoint"]
        again = api.post("/v1/agents/ops/sessions/main/messages",
                         json={"content": "again", "wait": True})
        assert again.status_code == 200, again.text
        api.close()
    finally:
        box.remove()
        _run([*podman, "volume", "rm", "-f", volume], check=False)


def _without_the_options_it_says_why_bubblewrap_is_unusable(podman: list[str], image: str
                                                            ) -> None:
    box = Container(podman, image, opts=[])
    try:
        health = box.health()
        assert health["sandbox"] == "process" and not health["sandbox_isolated"]
        assert "Operation not permitted" in health["sandboxes"]["bubblewrap"], health
        assert "NOT isolated" in box.logs()
    finally:
        box.remove()
