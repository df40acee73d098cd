"""The Python examples in README.md and docs/*.md run.

Every block fenced ```` ```python ```` is executed; blocks of one file run in order in one fresh process and
one namespace (a later block may use what an earlier one defined), in a temporary working directory, with
third-party plugin autoload off and the results database and feature cache in that directory. A block
fenced ```` ```python no-run ```` is skipped: only for what cannot run here (a hub download, a GPU), with the
reason written beside it. A new docs file is picked up by the glob, without touching this test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`\n]*)$")

#: runs the blocks of one file: ``python RUNNER blocks.json``; a block's code is compiled under its
#: file name and first line, so a traceback points into the Markdown file
RUNNER = textwrap.dedent(r"""
    import json, sys, traceback, types
    blocks = json.load(open(sys.argv[1]))
    module = types.ModuleType("docs_example")  # one namespace for the file's blocks, a real module
    module.__file__ = "docs_example.py"
    sys.modules["docs_example"] = module
    for block in blocks:
        where = f"{block['file']}:{block['line']}"
        try:
            code = "\n" * (block["line"] - 1) + block["code"]  # line numbers as in the Markdown file
            exec(compile(code, block["file"], "exec"), module.__dict__)
        except BaseException:
            print(f"DOCS-EXAMPLE-FAILED {where}", file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
        print(f"DOCS-EXAMPLE-OK {where}", flush=True)
""")


@dataclass
class Block:
    file: str
    line: int  # the first line of code (1-based)
    code: str
    runs: bool


def python_blocks(text: str, file: str) -> list[Block]:
    """The ```` ```python ```` blocks of a Markdown text, in order; ``runs`` is False for ``python no-run``."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        info, indent = m["info"].strip().split(), m["indent"]
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if info and info[0] == "python":
            body = [ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[i + 1:end]]
            blocks.append(Block(file, i + 2, "\n".join(body) + "\n", "no-run" not in info[1:]))
        i = end + 1
    return blocks


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def run_blocks(blocks: list[Block], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``blocks`` in order in a fresh Python, in ``cwd``; the zoo's state (results database, feature
    cache, recipe weights) kept in ``cwd``."""
    todo = [{"file": b.file, "line": b.line, "code": b.code} for b in blocks if b.runs]
    (cwd / "blocks.json").write_text(json.dumps(todo))
    (cwd / "run_blocks.py").write_text(RUNNER)
    env = {
        **os.environ,
        "ZOO_DISABLE_PLUGIN_AUTOLOAD": "1",
        "ZOO_RESULTS_DB": str(cwd / "results.sqlite"),
        "ZOO_FEATURE_CACHE": str(cwd / "features"),
        "ZOO_CACHE": str(cwd / "cache"),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "ZOO_NUM_THREADS": "1",
    }
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "run_blocks.py", "blocks.json"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_python_examples_run(path, tmp_path):
    rel = path.relative_to(ROOT).as_posix()
    blocks = python_blocks(path.read_text(encoding="utf-8"), rel)
    if not any(b.runs for b in blocks):
        return  # nothing to run (its other blocks are shell commands and output)
    proc = run_blocks(blocks, tmp_path)
    assert proc.returncode == 0, f"an example in {rel} failed:\n{proc.stderr[-6000:]}"
    assert proc.stdout.count("DOCS-EXAMPLE-OK") == sum(b.runs for b in blocks)


# -- the checker itself ---------------------------------------------------------------------------------------
PLANTED = """# A page

```python
x = 2
```

Some text.

```python no-run
raise SystemExit("needs a GPU: never run")
```

```python
assert x == 2   # the namespace carries over
y = 1 / (x - 2)
```

  ```python
  z = 3
  ```
"""


def test_blocks_are_found_with_their_lines_and_no_run_is_skipped():
    blocks = python_blocks(PLANTED, "page.md")
    assert [(b.line, b.runs) for b in blocks] == [(4, True), (10, False), (14, True), (19, True)]
    assert blocks[3].code == "z = 3\n"  # an indented fence (in a list item) is dedented


def test_a_failing_example_is_reported_by_file_and_line(tmp_path):
    proc = run_blocks(python_blocks(PLANTED, "page.md"), tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "DOCS-EXAMPLE-FAILED page.md:14" in proc.stderr and "ZeroDivisionError" in proc.stderr
    assert 'page.md", line 15' in proc.stderr  # the traceback points into the Markdown file
    assert "needs a GPU" not in proc.stderr and proc.stdout.count("DOCS-EXAMPLE-OK") == 1


def test_the_docs_say_how_their_examples_are_tested():
    head = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")[:1500]
    assert "tests/test_docs.py" in head and "python no-run" in head


def test_the_hook_table_lists_every_hook_and_every_add_method():
    """A plugin author reads the table, not ``zoo/registry``: a new hook or ``Registry.add_*`` method needs
    its row (what it adds, and a link to its example or page)."""
    import inspect

    from zoo.registry import hookspecs
    from zoo.registry.registry import Registry

    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    table = text[text.index("| hook / method |"):]
    table = table[:table.index("\n\n")]
    hooks = [n for n, f in vars(hookspecs).items() if n.startswith("zoo_") and inspect.isfunction(f)]
    methods = [n for n, _ in inspect.getmembers(Registry, inspect.isfunction) if n.startswith("add_")]
    assert "zoo_register" in hooks and "add_objective" in methods  # what is looked for is there to find
    for name in hooks:
        assert f"| `{name}(" in table, f"add a row for the hook {name} to the hook table in docs/plugins.md"
    for name in methods:
        assert f"| `registry.{name}(" in table, (
            f"add a row for registry.{name} to the hook table in docs/plugins.md (what it adds; a link to its "
            f"example or its page)")
