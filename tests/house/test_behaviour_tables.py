"""The conformance tables of the fakes (KServe, Vertex AI): every row names where upstream
defines the behaviour and tests that exist, so a row without behaviour fails."""

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
FAKES = TESTS / "harness" / "fakes"
TABLES = ("KSERVE_BEHAVIOUR.md", "VERTEX_BEHAVIOUR.md")


def _rows(table: Path) -> list[list[str]]:
    rows = []
    for line in table.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit():
            rows.append(cells)
    return rows


def check_table(table: Path) -> None:
    defined = set()
    for path in TESTS.rglob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)\(", path.read_text(), re.MULTILINE))
    rows = _rows(table)
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 15
    for number, behaviour, versions, source, tests in rows:
        assert behaviour and versions and source, f"row {number} lacks a behaviour, versions or source"
        names = re.findall(r"`(test_\w+)`", tests)
        assert names, f"row {number} names no test"
        missing = [n for n in names if n not in defined]
        assert not missing, f"row {number} names tests that do not exist: {missing}"


@pytest.mark.parametrize("name", TABLES)
def test_every_row_has_a_source_and_tests_that_exist(name):
    check_table(FAKES / name)


def test_the_checker_fails_on_a_row_without_tests(tmp_path):
    table = FAKES / TABLES[0]
    number = len(_rows(table)) + 1
    broken = tmp_path / "table.md"
    broken.write_text(table.read_text() + f"| {number} | something | all | somewhere | none |\n")
    with pytest.raises(AssertionError, match=f"row {number} names no test"):
        check_table(broken)
