"""Functions stay short enough to read: none under src/ is longer than `LIMIT` lines (a longer
one is split into parts with names, as the service's `create_app` into its route groups)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LIMIT = 150


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int, int]]:
    """(name, first line, length in lines) of each function longer than `limit` lines."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                out.append((node.name, node.lineno, length))
    return out


def test_the_checker_measures_whole_functions() -> None:
    def body(indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(5))

    source = (
        f"def short():\n{body('    ')}\nclass A:\n    async def method(self):\n"
        f"{body('        ')}        pass\n"
    )
    assert long_functions(source, 7) == []
    assert long_functions(source, 6) == [("method", 9, 7)]
    assert long_functions(source, 5) == [("short", 1, 6), ("method", 9, 7)]


@pytest.mark.parametrize(
    "path", sorted(SRC.rglob("*.py")), ids=lambda p: p.relative_to(SRC).as_posix()
)
def test_no_function_is_longer_than_the_limit(path: Path) -> None:
    found = long_functions(path.read_text())
    assert not found, f"functions longer than {LIMIT} lines in {path.relative_to(SRC)}: " + (
        ", ".join(f"{name} (line {line}, {n} lines)" for name, line, n in found)
    )
