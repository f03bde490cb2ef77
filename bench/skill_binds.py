"""What showing an agent's skills in its sandbox costs: a bubblewrap command's start
with 0, 1 and 8 skill folders bound read-only at /skills/<name>.

    .venv/bin/python bench/skill_binds.py            # n = 100 per count
    .venv/bin/python bench/skill_binds.py --n 300

``start_ms``: ``BubblewrapBackend.run(["true"], binds=...)`` from the call to the
result (the folders opened by the daemon, the bind, the sandbox set-up and tear-down),
as an agent's uid under a root daemon; the three counts take turns, so the machine's
load drifts alike for each. p50 / p99 / max in milliseconds. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from agentd.sandbox.backends import BubblewrapBackend, Limits, prepare_workspace
from agentd.sandbox.binds import ReadOnlyBind

COUNTS = (0, 1, 8)
USER = (231_900, 231_900)


def skill(root: Path, name: str) -> Path:
    folder = root / name
    (folder / "scripts").mkdir(parents=True)
    (folder / "SKILL.md").write_text(f"---\nname: {name}\ndescription: x\n---\nbody\n")
    (folder / "scripts" / "run.py").write_text("print('x')\n")
    for path in (folder, folder / "scripts"):
        path.chmod(0o755)
    return folder


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(ordered[len(ordered) // 2], 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "max": round(ordered[-1], 2)}


async def main(n: int) -> dict[str, object]:
    why = BubblewrapBackend.unavailable()
    if why is not None:
        return {"bench": "skill_binds", "error": f"bubblewrap: {why}"}
    user = USER if os.geteuid() == 0 else None
    backend = BubblewrapBackend(user=user)
    with tempfile.TemporaryDirectory(prefix="agentd-bench-binds-") as tmp:
        root = Path(tmp)
        store = root / "home" / "skills"
        store.mkdir(parents=True)
        (root / "home").chmod(0o700)
        folders = [skill(store, f"skill-{i}") for i in range(max(COUNTS))]
        workspace = root / "ws"
        workspace.mkdir(mode=0o700)
        prepare_workspace(workspace, user=user)
        binds = [ReadOnlyBind(source=f, target=f"/skills/{f.name}") for f in folders]
        times: dict[int, list[float]] = {count: [] for count in COUNTS}
        limits = Limits(wall_s=30)
        for round_ in range(n):
            for count in COUNTS:
                started = time.perf_counter()
                result = await backend.run(["true"], workspace=workspace,
                                           binds=binds[:count], limits=limits)
                times[count].append((time.perf_counter() - started) * 1000)
                if result.exit_code != 0:
                    raise SystemExit(f"true failed with {count} binds: {result.stderr}")
            if round_ % 20 == 0:
                print(f"round {round_}/{n}", file=sys.stderr)
    return {"bench": "skill_binds", "n": n, "uid": "agent" if user else "daemon",
            "start_ms": {str(count): stats(values) for count, values in times.items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.n))))
