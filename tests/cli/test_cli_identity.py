"""`agentd token|tenant|audit` against a real daemon on a socket: the admin makes a tenant
and a token, the token works (and only in its tenant), the audit log verifies, and
after a row of the database is edited by hand `agentd audit verify` fails naming it.
Bad input gets one clear error line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.cli.conftest import one_error_line, serve
from typer.testing import CliRunner, Result

ADMIN = "cli-admin-token-0123456789abcdef"


def _cli(url: str, token: str, *args: str) -> Result:
    from agentd.cli import app

    return CliRunner().invoke(app, ["--url", url, "--token", token, *args])


def test_tokens_tenants_and_the_audit_log_from_the_command_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with serve(home, tokens=[ADMIN]) as url:
        made = _cli(url, ADMIN, "tenant", "create", "acme", "-q", "agents=2",
                    "-q", "spend_usd_per_day=5.5", "-d", "ACME Inc.")
        assert made.exit_code == 0, made.output
        assert "agents 2" in made.output and "spend_usd_per_day 5.5" in made.output
        token = _cli(url, ADMIN, "token", "create", "ci", "--role", "member",
                     "--tenant", "acme", "--expires", "30d", "--json")
        assert token.exit_code == 0, token.output
        import json

        text = json.loads(token.stdout)["token"]
        assert text.startswith("agd_")
        # The new token works, in its tenant.
        created = _cli(url, text, "create", "acme.helper")
        assert created.exit_code == 0, created.output
        outside = _cli(url, text, "create", "helper")
        assert "acme.<name>" in one_error_line(outside)
        listed = _cli(url, ADMIN, "token", "list")
        assert "ci" in listed.output and "member" in listed.output
        assert text not in listed.output and text[:14] in listed.output
        shown = _cli(url, ADMIN, "tenant", "show", "acme")
        assert "agents 1/2" in shown.output, shown.output
        # Bad input: one line each, exit 2 for the command line's own mistakes.
        for args, exit_code, wanted in (
                (("token", "create", "x", "--expires", "soon"), 2, "--expires"),
                (("tenant", "create", "x", "-q", "agents=lots"), 2, "not a number"),
                (("tenant", "create", "x", "-q", "cpus=2"), 2, "NAME=N"),
                (("tenant", "set", "acme"), 2, "nothing to change")):
            bad = _cli(url, ADMIN, *args)
            assert bad.exit_code == exit_code and wanted in bad.stderr, (args, bad.output)
        role = _cli(url, ADMIN, "token", "create", "x", "--role", "root")
        assert "role" in one_error_line(role)
        above = _cli(url, text, "token", "create", "y", "--role", "admin")
        assert "above its own" in one_error_line(above)
        # The audit log: the changes, with who made them; the chain verifies.
        audit = _cli(url, ADMIN, "audit", "list", "--action", "token.*")
        assert audit.exit_code == 0 and "token.create" in audit.output, audit.output
        assert "token-1" in audit.output
        ok = _cli(url, ADMIN, "audit", "verify")
        assert ok.exit_code == 0 and ok.output.startswith("ok:"), ok.output
        assert _cli(url, text, "audit", "verify").exit_code == 1  # (not an admin)
        # Someone with the database edits a row: verify names it and exits 1.
        with sqlite3.connect(home / "agentd.db") as db:
            db.execute("UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 2")
        broken = _cli(url, ADMIN, "audit", "verify")
        assert broken.exit_code == 1 and "BROKEN at row 2" in broken.output, broken.output
        revoked = _cli(url, ADMIN, "token", "revoke", "ci")
        assert revoked.exit_code == 0
        assert _cli(url, text, "list").exit_code == 1
