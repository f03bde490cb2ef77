"""Images and files from the CLI and the Python client: ``agentd send --attach``, the
client's ``image()`` and ``file()`` parts (from bytes or a path), its ``blob()``, and
``agentd history`` showing a line per part (type, size, blob)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tests.cli.conftest import Invoke
from tests.media.images import pdf, png

from agentd.client import APIError, Client, file, image


def test_the_client_sends_parts_from_bytes_and_paths(
        cli: Invoke, live_url: str, agent_name: str, tmp_path: Path) -> None:
    del cli  # (its environment: the daemon's home, so the client finds its token)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(12, 34))
    (tmp_path / "r.pdf").write_bytes(pdf(2))
    with Client(live_url) as client:
        client.create_agent(agent_name)
        run = client.send(agent_name, "k", ["what are these?", image(photo),
                                            file(tmp_path / "r.pdf"), image(png(3, 3))])
        assert run["output"] == ("echo: what are these? [image image/png 12x34] "
                                 "[file application/pdf r.pdf 2 pages] [image image/png 3x3]")
        sha = hashlib.sha256(png(12, 34)).hexdigest()
        assert client.blob(agent_name, "k", sha) == ("image/png", png(12, 34))
        with pytest.raises(APIError) as caught:
            client.blob(agent_name, "k", "0" * 64)
        assert caught.value.status == 404
        with pytest.raises(APIError) as bad:
            client.send(agent_name, "k", ["x", image(b"not an image", "image/png")])
        assert bad.value.status == 422


def test_send_attach_and_history_show_each_part(cli: Invoke, agent_name: str,
                                                 tmp_path: Path) -> None:
    photo = tmp_path / "cat.png"
    photo.write_bytes(png(12, 34))
    notes = tmp_path / "notes.txt"
    notes.write_text("to remember")
    cli("create", agent_name)
    sent = cli("send", agent_name, "look", "--attach", str(photo), "--attach", str(notes),
               "-s", "m")
    assert sent.exit_code == 0, sent.output
    assert sent.stdout.strip() == ("echo: look [image image/png 12x34] "
                                   "[file text/plain notes.txt]")
    text = cli("history", agent_name, "-s", "m").stdout
    sha = hashlib.sha256(png(12, 34)).hexdigest()
    assert f"+ image image/png, 12x34, {len(png(12, 34))} B, blob {sha[:12]}" in text
    assert "+ file text/plain, notes.txt, 11 B, blob " in text
    missing = cli("send", agent_name, "x", "--attach", str(tmp_path / "nope.png"))
    assert missing.exit_code == 1
    assert "cannot read" in missing.output
