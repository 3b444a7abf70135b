"""Print the reliability suite's totals over every stage's tests; exit 1 when a line was lost.

`make test` runs it after the per-stage loop (and empties the counts file before it):

    python tests/reliability_report.py [COUNTS_FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_counts import counts_path, format_totals, read, totals


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else counts_path()
    lines = read(path)
    figures = totals(lines)
    print(format_totals(figures))
    if figures["tests"] == 0:
        print(f"reliability: no counts in {path} (were the reliability tests deselected?)")
    for line in lines:
        if line["lines_lost"] or line["faults_survived"] < line["faults_injected"]:
            print(f"  {line['test']}: injected {line['faults_injected']}, survived {line['faults_survived']}, lost {line['lines_lost']}")
    if figures["lines_lost"] > 0 or figures["faults_survived"] < figures["faults_injected"]:
        print("reliability: FAILED (lines lost, or faults not survived)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
