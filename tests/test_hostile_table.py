"""hostile/README.md maps each class of issue 20 to the tests that hold it: every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_the_hostile_table_names_exists() -> None:
    table = [line for line in (ROOT / "hostile" / "README.md").read_text().splitlines() if line.startswith("| ")]
    rows = [line for line in table if re.match(r"\| \d+\. ", line)]
    assert [int(line.split(".")[0][2:]) for line in rows] == list(range(1, 13))
    for row in rows:
        files = re.findall(r"`(test_\w+\.py)`", row)
        assert files, row
        defined = set()
        for name in files:
            defined |= set(re.findall(r"^def (test_\w+)", (ROOT / "tests" / name).read_text(), re.M))
        for test, cut in re.findall(r"`(test_\w+?)(`|…)", row):  # `name…`: the tests whose names begin so
            found = any(d.startswith(test) for d in defined) if cut == "…" else test in defined
            assert found, f"{test} (class {row.split('.')[0][2:]}) is in none of {files}"
