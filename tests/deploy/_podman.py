"""Podman for the deploy tests: this machine's configuration, the images' Debian base
made from Debian's packages (no registry is reachable here), agentd's image built once
(a lock keeps two xdist workers from building it at the same time: the second finds
podman's layers made), and containers that the tests start and remove."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until

from agentd.testing.live import free_port

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/agentd-base:bookworm"
IMAGE = "localhost/agentd:test"
#: What bubblewrap needs inside a container (docs/operations.md, "Containers").
SANDBOX_OPTS = ["--security-opt", "seccomp=unconfined", "--security-opt", "unmask=/proc/*"]
#: The host's CA bundle: where a TLS-inspecting proxy's CA is (this project's machines'
#: egress), given to the build's pip.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
#: Held while building (other workers wait, then reuse podman's layers).
_LOCK = Path("/tmp/agentd-test-podman.lock")


def tools() -> str:
    """podman's path; skips (fails in CI) without podman, runc and mmdebstrap."""
    found = {name: shutil.which(name) for name in ("podman", "mmdebstrap", "runc")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail(f"CI must have {', '.join(missing)} (scripts/test.sh installs them)")
        pytest.skip(f"no {', '.join(missing)} here")
    if os.geteuid() != 0:
        pytest.skip("the deploy tests run podman as root (as CI does)")
    return str(found["podman"])


def configure(directory: Path) -> Path:
    """A containers.conf for this machine's way to run containers (the issue's
    words): runc, cgroupfs, no default ulimits (podman's default asks for a descriptor
    limit above the host's hard one)."""
    conf = directory / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n'
                    '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n')
    return conf


def run(cmd: list[str], timeout: float = 600, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[:4])}... exited {done.returncode}:\n"
                             f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done


def _base(podman: str, tmp: Path) -> None:
    """The images' base, made from Debian's packages (reused once made)."""
    if run([podman, "image", "exists", BASE], check=False).returncode == 0:
        return
    tar = tmp / "base.tar"
    # As Debian's own slim image: no documentation or locales, apt's caches cleaned.
    run(["mmdebstrap", "--variant=minbase", "--include=ca-certificates",
         "--dpkgopt=path-exclude=/usr/share/doc/*",
         "--dpkgopt=path-exclude=/usr/share/man/*",
         "--dpkgopt=path-exclude=/usr/share/locale/*",
         "--dpkgopt=path-include=/usr/share/locale/locale.alias",
         "--customize-hook=chroot \"$1\" apt-get clean",
         "bookworm", str(tar), "http://deb.debian.org/debian"], timeout=900)
    run([podman, "import", str(tar), BASE])
    tar.unlink()


def build(podman: str, tmp: Path, tag: str, containerfile: Path, context: Path) -> str:
    """``containerfile`` built on the Debian base as ``tag`` (pip given the host's CA)."""
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _base(podman, tmp)
        cmd = [podman, "build", "--format", "docker", "--build-arg", f"BASE={BASE}",
               "-t", tag, "-f", str(containerfile)]
        if HOST_CA.exists():
            cmd += ["--volume", f"{HOST_CA}:/run/host-ca.crt:ro",
                    "--build-arg", "PIP_CERT=/run/host-ca.crt"]
        run([*cmd, str(context)], timeout=1800)
    return tag


def wait_healthy(url: str, what: str) -> dict[str, Any]:
    def up() -> dict[str, Any] | None:
        try:
            reply = httpx.get(f"{url}/health", timeout=5)
        except httpx.HTTPError:
            return None
        got: dict[str, Any] | None = reply.json() if reply.status_code == 200 else None
        return got

    found: dict[str, Any] = wait_until(up, within=180, interval=0.5, what=f"{what} healthy")
    return found


class Container:
    """An agentd container, started at once; :meth:`remove` ends it."""

    def __init__(self, podman: str, image: str, *, opts: list[str],
                 volume: str | None = None) -> None:
        self.podman = podman
        self.name = f"agentd-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        volume_opts = ["-v", f"{volume}:/var/lib/agentd"] if volume else []
        run([podman, "run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:8721",
             *volume_opts, *opts, image])

    def health(self) -> dict[str, Any]:
        return wait_healthy(self.url, self.name)

    def exec(self, *cmd: str) -> str:
        return run([self.podman, "exec", self.name, *cmd]).stdout

    def token(self) -> str:
        return self.exec("cat", "/var/lib/agentd/token").strip()

    def logs(self) -> str:
        done = run([self.podman, "logs", self.name], check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        run([self.podman, "rm", "-f", "-t", "5", self.name], check=False)


