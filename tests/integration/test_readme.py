"""The README is code: every ```python block in it runs, as written, against the local server.

Each block runs in its own Python process, in an empty temporary directory, with
``CHROMA_EMBED_URL`` pointing at the session's local /embed_sparse server and no API key,
as a newcomer would paste it into a file. Top-level ``await`` is allowed, as in a notebook
or ``python -m asyncio``. A block exits 0 or the test fails with its output.

Markers: an HTML comment on the last non-blank line before a block's opening fence
(invisible on GitHub) says how to run it:

- ``<!-- readme-test: skip REASON -->``: not run, reported as skipped with REASON.
  For Chroma Cloud blocks: ``<!-- readme-test: skip cloud-only: needs Chroma Cloud credentials -->``.
- ``<!-- readme-test: pytest -->``: the block is a test module; it runs under pytest
  (the package's pytest plugin provides its fixtures) and every test in it must pass.
- ``<!-- readme-test: continues -->``: the block follows on from the previous Python
  block (its names are defined there), so the two run as one script.

Any other marker is an error, so a typo cannot silently skip a block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"

#: Seconds one block may take. The slowest blocks start a server or embed a few texts;
#: a cold chromadb import is ~3 s on this 2-core machine when it is busy.
BLOCK_TIMEOUT = 120

#: Blocks known not to run as written, by id, with the reason. Each is a strict xfail:
#: once the README is fixed the test passes, xfail(strict) reports it, and the entry
#: must be removed here. Keep this empty.
KNOWN_BROKEN: dict[str, str] = {}

_MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<body>.*?)\s*-->$")

# Runs one block: README line numbers in tracebacks, top-level await allowed.
_RUNNER = textwrap.dedent(
    """
    import ast, asyncio, inspect, sys
    path, first_line = sys.argv[1], int(sys.argv[2])
    source = "\\n" * (first_line - 1) + open(path, encoding="utf-8").read()
    code = compile(source, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace = {"__name__": "__main__"}
    result = eval(code, namespace)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(result)
    """
)


@dataclass(frozen=True, slots=True)
class Block:
    """One ```python block of a Markdown file.

    Attributes:
        id: ``<heading slug>-<n>``: the n-th Python block under that heading, from 1.
        line: The line of its first code line, 1-based.
        code: Its code.
        marker: The body of its ``readme-test`` marker, or ``""``.
        previous: The Python block before it, if any.
    """

    id: str
    line: int
    code: str
    marker: str
    previous: Block | None

    @property
    def script(self) -> tuple[str, int]:
        """The code to run and the README line it starts at, with what it continues."""
        if self.marker != "continues":
            return self.code, self.line
        if self.previous is None:
            raise ValueError(f"README block {self.id} continues nothing: it is the first")
        before, start = self.previous.script
        gap = self.line - start - before.count("\n")
        # Blank lines in place of the prose between, so line numbers stay the README's.
        return before + "\n" * max(gap, 1) + self.code, start


def python_blocks(markdown: str) -> list[Block]:
    """Every ```python block of ``markdown``, in order, with its id and marker."""
    blocks: list[Block] = []
    heading, count = "top", 0
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading, count = _slug(line.lstrip("#")), 0
        elif line.startswith("```"):
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines)
            )
            if line.strip() == "```python":
                count += 1
                blocks.append(
                    Block(
                        id=f"{heading}-{count}",
                        line=i + 2,
                        code="\n".join(lines[i + 1 : end]) + "\n",
                        marker=_marker_before(lines, i),
                        previous=blocks[-1] if blocks else None,
                    )
                )
            i = end  # a fence's contents are never headings
        i += 1
    return blocks


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _marker_before(lines: list[str], fence: int) -> str:
    for j in range(fence - 1, -1, -1):
        if lines[j].strip():
            found = _MARKER.match(lines[j].strip())
            return found.group("body") if found else ""
    return ""


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def _params() -> list[object]:
    params: list[object] = []
    for block in BLOCKS:
        marks = []
        if block.id in KNOWN_BROKEN:
            marks.append(pytest.mark.xfail(reason=KNOWN_BROKEN[block.id], strict=True))
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


@pytest.mark.slow
@pytest.mark.parametrize("block", _params())
def test_readme_block_runs_as_written(
    block: Block, embed_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block exits 0 in a fresh process and directory, against the local server."""
    if block.marker.startswith("skip"):
        pytest.skip(block.marker.removeprefix("skip").strip(" :") or "marked skip")
    if block.marker not in ("", "pytest", "continues"):
        pytest.fail(f"README block {block.id}: unknown marker 'readme-test: {block.marker}'")
    code, line = block.script
    env = {
        **os.environ,
        "CHROMA_EMBED_URL": embed_server_url,
        # This checkout's code, whatever is installed; blocks import nothing else from it.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        # chromadb's product telemetry would try the network.
        "ANONYMIZED_TELEMETRY": "False",
    }
    if block.marker == "pytest":
        path = tmp_path / f"test_readme_{block.id.replace('-', '_')}.py"
        path.write_text(code, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path.name]
    else:
        path = tmp_path / "readme_block.py"
        path.write_text(code, encoding="utf-8")
        command = [sys.executable, "-c", _RUNNER, path.name, str(line)]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"README block {block.id} (line {block.line}) failed with exit code "
        f"{done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


def test_every_python_fence_is_found_and_known_broken_ids_exist() -> None:
    """The parser sees each ```python fence, and KNOWN_BROKEN names only real blocks."""
    text = README.read_text(encoding="utf-8")
    assert len(BLOCKS) == sum(line.strip() == "```python" for line in text.splitlines())
    assert set(KNOWN_BROKEN) <= {block.id for block in BLOCKS}
    skipped = {block.id for block in BLOCKS if block.marker.startswith("skip")}
    assert not set(KNOWN_BROKEN) & skipped, "a skipped block is not broken: drop it there"
    assert len({block.id for block in BLOCKS}) == len(BLOCKS)


def test_the_parser_reads_headings_markers_and_continuations() -> None:
    """Ids count per heading; a marker is the line before the fence; continues chains."""
    markdown = textwrap.dedent(
        """\
        # Title

        ```python
        a = 1
        ```

        ## Cloud: setup

        <!-- readme-test: skip cloud-only: needs credentials -->
        ```python
        client = CloudClient()
        ```

        Some prose.
        <!-- readme-test: continues -->

        ```python
        print(a)
        ```

        ```bash
        # not a heading
        ```
        ```python
        b = 2
        ```
        """
    )
    first, cloud, cont, last = python_blocks(markdown)
    assert [b.id for b in (first, cloud, cont, last)] == [
        "title-1",
        "cloud-setup-1",
        "cloud-setup-2",
        "cloud-setup-3",
    ]
    assert (first.line, first.marker, last.marker) == (4, "", "")
    assert cloud.marker == "skip cloud-only: needs credentials"
    assert cont.marker == "continues"
    code, start = cont.script
    assert start == cloud.line
    assert code.splitlines()[0] == "client = CloudClient()"
    assert code.splitlines()[cont.line - cloud.line] == "print(a)"
