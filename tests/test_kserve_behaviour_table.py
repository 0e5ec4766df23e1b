"""The KServe conformance table: every row names its upstream source and tests that exist."""

import re
from pathlib import Path

TABLE = Path(__file__).parent / "fakes" / "KSERVE_BEHAVIOUR.md"


def _rows():
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_every_row_has_a_source_and_tests_that_exist():
    defined = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)\(", path.read_text(), re.MULTILINE))
    rows = _rows()
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 20
    for number, behaviour, versions, source, tests in rows:
        assert behaviour and versions and source, f"row {number} lacks a behaviour, versions or source"
        names = re.findall(r"`(test_\w+)`", tests)
        assert names, f"row {number} names no test"
        missing = [n for n in names if n not in defined]
        assert not missing, f"row {number} names tests that do not exist: {missing}"


def test_the_checker_fails_on_a_row_without_tests(tmp_path, monkeypatch):
    import pytest

    broken = tmp_path / "table.md"
    number = len(_rows()) + 1
    broken.write_text(TABLE.read_text() + f"| {number} | something | all | somewhere | none |\n")
    monkeypatch.setattr(__import__(__name__), "TABLE", broken)
    with pytest.raises(AssertionError, match=f"row {number} names no test"):
        test_every_row_has_a_source_and_tests_that_exist()
