"""Write docs/RELIABILITY.md's table from the fault tests' latest run.

.venv/bin/pytest tests/faults && .venv/bin/python -m tests.faults.report
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "test-artifacts" / "reliability.json"
DOC = ROOT / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def table(rows: dict[str, dict[str, int]]) -> str:
    lines = [
        f"Latest run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| fault class | injected / tried | survived | data lost |",
        "|---|---|---|---|",
    ]
    for name, row in sorted(rows.items()):
        lines.append(f"| {name} | {row['injected']} | {row['survived']} | {row['lost']} |")
    total = {k: sum(r[k] for r in rows.values()) for k in ("injected", "survived", "lost")}
    lines.append(
        f"| **total** | **{total['injected']}** | **{total['survived']}** | **{total['lost']}** |"
    )
    return "\n".join(lines)


def main() -> None:
    rows = json.loads(ARTIFACT.read_text())
    text = DOC.read_text()
    block = f"{BEGIN}\n{table(rows)}\n{END}"
    DOC.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), block, text, flags=re.S))
    print(f"wrote {len(rows)} fault classes into {DOC}")


if __name__ == "__main__":
    main()
