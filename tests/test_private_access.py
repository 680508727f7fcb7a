"""No module reads another module's private names: a capability that code outside a model needs
is a public method of the model (a hook on `Recommender`), not `model._something`.

The rule, checked on the syntax tree of every file under src/:
- `obj._name` (not a dunder) where obj is not `self` or `cls` is allowed only when `_name` is
  defined in the same module (a function, class or module-level name, or an attribute the
  module assigns through `self`/`cls`);
- `from lmrec.x import _name` is allowed only from a module of the same package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: (file, expression or import) allowed, each with the reason above it.
ALLOWED = {
    # argparse's own type of `add_subparsers()`; it has no public name.
    ("lmrec/commands/evaluate.py", "argparse._SubParsersAction"),
    ("lmrec/commands/experiment.py", "argparse._SubParsersAction"),
    ("lmrec/commands/models.py", "argparse._SubParsersAction"),
    ("lmrec/commands/serve.py", "argparse._SubParsersAction"),
    ("lmrec/commands/text.py", "argparse._SubParsersAction"),
    ("lmrec/cli.py", "argparse._SubParsersAction"),
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined(tree: ast.Module) -> set[str]:
    """Names this module defines: functions, classes, assigned names, imports, arguments and
    attributes it assigns through self or cls."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, ast.alias):
            out.add((node.asname or node.name).split(".")[-1])
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            out.add(node.attr)
    return out


def violations(source: str, rel: str) -> list[tuple[str, int, str]]:
    """(rel, line, offending expression) of one source file, `rel` its path under src/."""
    package = ".".join(Path(rel).parent.parts)
    tree = ast.parse(source, filename=rel)
    defined = _defined(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            v = node.value
            if isinstance(v, ast.Name) and v.id in ("self", "cls"):
                continue
            if node.attr in defined:
                continue
            out.append((rel, node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("lmrec."):
                continue
            same = node.module.rpartition(".")[0] == package or node.module == package
            for a in node.names:
                if _private(a.name) and not same:
                    out.append((rel, node.lineno, f"from {node.module} import {a.name}"))
    return out


def test_the_checker_finds_private_access() -> None:
    bad = (
        "from lmrec.models.mf import _weights\n"
        "from lmrec.service.live import _helper\n"
        "def f(model, new):\n"
        "    new._joint = None\n"
        "    return model._lam + model.config.reg + _weights\n"
    )
    found = {e for _, _, e in violations(bad, "lmrec/service/probe.py")}
    assert found == {"model._lam", "new._joint", "from lmrec.models.mf import _weights"}
    ok = "class A:\n    def __init__(self):\n        self._x = 1\ndef g(a):\n    return a._x\n"
    assert violations(ok, "lmrec/probe.py") == []


@pytest.mark.parametrize(
    "path", sorted(SRC.rglob("*.py")), ids=lambda p: p.relative_to(SRC).as_posix()
)
def test_no_module_reads_another_modules_private_names(path: Path) -> None:
    rel = path.relative_to(SRC).as_posix()
    found = [(f, n, e) for f, n, e in violations(path.read_text(), rel) if (f, e) not in ALLOWED]
    assert not found, "private names read from outside their module:\n" + "\n".join(
        f"  {f}:{n}: {e}" for f, n, e in found
    )
