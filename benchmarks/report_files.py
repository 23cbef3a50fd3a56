"""Where every benchmark writes its report: `reports/<name>.json` and `<name>.md`."""

from __future__ import annotations

import json
from pathlib import Path

REPORTS = Path(__file__).with_name("reports")


def write_report(name: str, report: dict, markdown: str, directory: Path = REPORTS) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (directory / f"{name}.md").write_text(markdown)
