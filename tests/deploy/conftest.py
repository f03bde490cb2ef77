"""The deploy tests' fixtures: podman configured for this machine, agentd's image."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.deploy import _podman


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = _podman.tools()
    conf = _podman.configure(tmp_path_factory.mktemp("containers"))
    with pytest.MonkeyPatch.context() as patch:  # (for podman and podman-compose)
        patch.setenv("CONTAINERS_CONF", str(conf))
        yield path


@pytest.fixture(scope="session")
def image(podman: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _podman.build(podman, tmp_path_factory.mktemp("base"), _podman.IMAGE,
                         _podman.ROOT / "Containerfile", _podman.ROOT)
