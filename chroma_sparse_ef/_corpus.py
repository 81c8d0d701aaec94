"""A real English corpus available offline: docstrings of the installed standard library.

The sources are parsed with `ast`, never imported, so nothing runs (some standard
modules do things on import) and nothing is downloaded. Used by the demo, the notebooks
and the benchmarks.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Doc", "stdlib_docstrings"]

#: Folders of the standard library that are tests, tools or vendored code, not API docs.
_SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "site-packages",
        "dist-packages",
        "ensurepip",
        "turtledemo",
        "__pycache__",
        "pydoc_data",
        "venv",
    }
)
#: Shorter docstrings are mostly "Return self." and carry nothing to search for.
_MIN_CHARS = 80


@dataclass(frozen=True, slots=True)
class Doc:
    """One docstring.

    Attributes:
        id: Stable id, the dotted path of the documented object (``json.dumps``).
        text: The cleaned docstring.
        module: The module it comes from (``json``).
        kind: ``"module"``, ``"class"`` or ``"function"``.
    """

    id: str
    text: str
    module: str
    kind: str


def stdlib_docstrings(limit: int | None = None, *, root: Path | None = None) -> list[Doc]:
    """Docstrings of the standard library, in a stable order.

    Args:
        limit: Stop after this many documents (None: all, about 3,000 on CPython 3.11).
        root: The library folder to read; default: this interpreter's standard library.

    Returns:
        Documents with unique ids, sorted by file then position.
    """
    out: list[Doc] = []
    seen: set[str] = set()
    for doc in _walk(root or Path(sysconfig.get_paths()["stdlib"])):
        if doc.id in seen:
            continue
        seen.add(doc.id)
        out.append(doc)
        if limit is not None and len(out) >= limit:
            break
    return out


def _walk(root: Path) -> Iterator[Doc]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(
            part in _SKIP_DIRS or part.startswith(("_", ".", "config-")) for part in rel.parts[:-1]
        ):
            continue
        if rel.name.startswith("_") and rel.name != "__init__.py":
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        yield from _docs(tree, module)


def _docs(tree: ast.Module, module: str) -> Iterator[Doc]:
    text = ast.get_docstring(tree)
    if text and len(text) >= _MIN_CHARS:
        yield Doc(module, text, module, "module")
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            yield from _node_doc(node, module, f"{module}.{node.name}", "class")
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield from _node_doc(
                        item, module, f"{module}.{node.name}.{item.name}", "function"
                    )
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _node_doc(node, module, f"{module}.{node.name}", "function")


def _node_doc(
    node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef,
    module: str,
    qualname: str,
    kind: str,
) -> Iterator[Doc]:
    if node.name.startswith("_"):
        return
    text = ast.get_docstring(node)
    if text and len(text) >= _MIN_CHARS:
        yield Doc(qualname, text, module, kind)
