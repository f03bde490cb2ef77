"""Token scopes (``agentd.security.access``): the patterns, the decision, and the
configuration checked at start (unknown token names, bad patterns, a scope that says
nothing, scopes without auth): a clear error, from the settings and from
``agentd serve`` itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentd.config import Settings
from agentd.security.access import EVERYTHING, Scopes, check_pattern, tenant_of


def _settings(tmp_path: Path, **kwargs: Any) -> Settings:
    return Settings(home=tmp_path / "home", **kwargs)


@pytest.mark.parametrize("pattern", ["a", "a*", "support-?", "[ab]-bot", "[!x]*", "[]]x",
                                     "acme:*"])
def test_usable_patterns(pattern: str) -> None:
    assert check_pattern(pattern) == pattern


@pytest.mark.parametrize(("pattern", "why"), [
    ("", "empty"), ("x" * 257, "over 256"), ("a\nb", "control"), ("a[b", "never closed"),
    ("[!]", "never closed")])
def test_bad_patterns(pattern: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_pattern(pattern)


def test_a_scope_is_names_and_tenants_both_matched() -> None:
    scopes = Scopes(Settings(home=Path("/nonexistent"), tokens=["a", "b", "c", "d"], access={
        "token-1": {"tenants": ["acme", "acme-*"]},
        "token-2": {"agents": ["support-*"]},
        "token-3": {"agents": ["support-*"], "tenants": ["acme"]},
        "token-4": {"agents": []}}).access)
    acme, support = scopes.of("token-1"), scopes.of("token-2")
    both, none = scopes.of("token-3"), scopes.of("token-4")
    assert scopes.of("token-5") is EVERYTHING and scopes.of(None) is EVERYTHING
    assert acme.allows("x", "acme") and acme.allows("x", "acme-eu")
    assert not acme.allows("x", "acmeX") and not acme.allows("x", None)
    assert support.allows("support-1", None) and not support.allows("sales", "acme")
    assert both.allows("support-1", "acme") and not both.allows("support-1", "globex")
    assert not both.allows("sales", "acme")
    assert not none.allows("anything", "acme")
    # Matching is case-sensitive and whole-name.
    assert not support.allows("Support-1", None) and not support.allows("x-support-1", None)


def test_the_tenant_of_stored_settings() -> None:
    assert tenant_of({}) == "default"
    assert tenant_of({"tenant": "acme"}) == "acme"
    assert tenant_of({"tenant": 42}) is None  # invalid stored settings: in no tenant


def test_new_namespaces_are_checked_not_the_ones_an_agent_had() -> None:
    scopes = Scopes(Settings(home=Path("/nonexistent"), tokens=["a"], access={
        "token-1": {"tenants": ["acme"], "namespaces": ["acme:*"]}}).access)
    access = scopes.of("token-1")

    def ns(*names: str) -> dict[str, Any]:
        return {"memory": {"namespaces": list(names)}}

    assert access.new_namespaces(None, ns("acme:a")) == []
    assert access.new_namespaces(None, ns("acme:a", "globex:b")) == ["globex:b"]
    assert access.new_namespaces(ns("shared"), ns("shared", "acme:a")) == []
    assert EVERYTHING.new_namespaces(None, ns("anything")) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tokens": ["a"], "access": {"token-2": {"agents": ["x"]}}},
     "token(s) 'token-2' that the daemon does not have; its tokens are token-1"),
    ({"access": {"token": {"agents": ["x"]}}},
     "token(s) 'token' that the daemon does not have; its tokens are bootstrap"),
    ({"tokens": ["a"], "access": {"bootstrap": {"agents": ["x"]}}},
     "'bootstrap' that the daemon does not have"),
    ({"access": {"bootstrap": {}}}, "names `agents` or `tenants`"),
    ({"access": {"bootstrap": {"agents": ["a["]}}}, "never closed"),
    ({"access": {"bootstrap": {"tenants": [""]}}}, "empty"),
    ({"access": {"bootstrap": {"agents": ["x"], "colour": "red"}}}, "Extra inputs"),
    ({"auth": "none", "access": {"bootstrap": {"agents": ["x"]}}}, 'needs auth = "token"'),
])
def test_bad_configuration_is_a_clear_error(tmp_path: Path, kwargs: dict[str, Any],
                                            message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(tmp_path, **kwargs)
    assert message in str(caught.value)


def test_the_environment_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTD_TOKENS", json.dumps(["a", "b"]))
    monkeypatch.setenv("AGENTD_ACCESS", json.dumps({"token-2": {"tenants": ["acme"]}}))
    settings = Settings(home=tmp_path / "home")
    assert settings.access["token-2"].tenants == ["acme"]
    assert Scopes(settings.access).scoped("token-2")
    assert not Scopes(settings.access).scoped("token-1")


def test_agentd_toml_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "agentd.toml").write_text('tokens = ["a", "b"]\n\n[access.token-1]\n'
                                      'agents = ["support-*"]\ntenants = ["acme"]\n')
    monkeypatch.setenv("AGENTD_HOME", str(home))
    settings = Settings()
    assert settings.access["token-1"].agents == ["support-*"]


def test_the_daemon_refuses_to_start_with_a_bad_scope(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update(AGENTD_HOME=str(tmp_path / "home"), AGENTD_TOKENS=json.dumps(["a"]),
               AGENTD_ACCESS=json.dumps({"token-9": {"agents": ["x"]}}))
    done = subprocess.run([sys.executable, "-m", "agentd", "serve", "--port", "0"],
                          env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode != 0
    assert "token(s) 'token-9' that the daemon does not have" in done.stderr + done.stdout
    assert not (tmp_path / "home" / "agentd.db").exists()
