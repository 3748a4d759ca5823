"""The documentation is part of the product: every public class says what it is, and the code on the pages that
teach the Python API runs.

Code blocks: every fenced ```python block of the pages in `EXECUTED_PAGES` is run in a fresh namespace, from an
empty folder. A block that is not meant to run says so on the line just before its fence, with one of
`BLOCK_MARKERS`:

    <!-- docs-test: skip (why) -->      shown, never run (it needs a GPU, a trained run, a download)
    <!-- docs-test: pending (what) -->  written for an API that has not landed yet: expected to fail, and the test
                                        fails once it passes, so that the marker is removed with the change
"""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
EXECUTED_PAGES = ("own-code.md",)
MARKER = r"(?:^<!-- docs-test: (?P<marker>\w+) \((?P<reason>[^)]*)\) -->\n)?"  # on the line before the fence
FENCE = re.compile(MARKER + r"^```python\n(?P<code>.*?)^```$", re.M | re.S)
BLOCK_MARKERS = ("skip", "pending")


def python_blocks(page: str) -> list[tuple[str, str | None, str]]:
    """(id, marker, code) of each fenced python block of `page`, the id naming the page and the block's line."""
    text = (DOCS / page).read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start("code"))
        blocks.append((f"{page}:{line}", match["marker"], match["code"]))
    return blocks


def block_params() -> list:
    """One test case per block that runs: pending blocks are expected to fail, strictly."""
    pending = pytest.mark.xfail(strict=True, reason="written for an API that has not landed yet")
    return [
        pytest.param(code, id=block_id, marks=[pending] if marker == "pending" else [])
        for page in EXECUTED_PAGES
        for block_id, marker, code in python_blocks(page)
        if marker != "skip"
    ]


def test_block_markers_are_known_and_blocks_run() -> None:
    markers = [marker for page in EXECUTED_PAGES for _, marker, _ in python_blocks(page)]
    assert set(markers) - {None} <= set(BLOCK_MARKERS), f"unknown docs-test markers in {markers}"
    assert None in markers, "the executed pages have blocks without a marker, which run as they stand"


@pytest.mark.parametrize("code", block_params())
def test_code_block_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # whatever a block writes (logs, checkpoints) lands in the test's folder
    exec(compile(code, "<docs block>", "exec"), {"__name__": "__docs__"})


def public_classes_without_docstring() -> list[str]:
    """Top-level classes of selfsup/ not named with a leading underscore whose body has no docstring of its own
    (read from the source: a dataclass's or NamedTuple's generated signature does not count)."""
    missing = []
    for path in sorted((REPO / "selfsup").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and not ast.get_docstring(node):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    return missing


def test_every_public_class_has_its_own_docstring() -> None:
    assert public_classes_without_docstring() == []
