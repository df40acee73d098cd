"""Every command-line flag that an error message suggests is one that the command really takes.

A message that says "command line: --skip-bad-images" to a user of a command without that flag sends them
into a second error. The messages are found in the source (string literals in ``raise`` statements and in
the helpers that build exceptions or messages), and each ``--flag`` in them is checked against the real
argparse parser of every command that can show that message."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")

#: modules shared by several commands → the commands whose users can read its messages. A module of
#: zoo/commands/ serves its own command; any other module's flags must exist in at least one command.
SHOWN_BY = {
    "zoo/data/datasets.py": ("train", "eval"),
    "zoo/training/config.py": ("train",),
    "zoo/training/schedule.py": ("train",),
    "zoo/training/state.py": ("train",),
    "zoo/training/loop.py": ("train",),
    "zoo/training/runs.py": ("train",),
    "zoo/evaluation/model_eval.py": ("eval",),
    "zoo/results/database.py": ("eval", "leaderboard", "compare"),
    "zoo/results/leaderboard.py": ("leaderboard",),
    "plugins/datasets/coco.py": ("train", "eval"),
    "plugins/datasets/folder.py": ("train", "eval"),
}
#: flags of other programs that messages quote (pip, git), not zoo's
FOREIGN = {"prefix", "user", "force-reinstall", "porcelain", "untracked-files"}


def _strings(node: ast.AST) -> list[str]:
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.append(n.value)
    return out


def _message_strings(tree: ast.AST) -> list[str]:
    """Literals inside ``raise`` statements, and inside functions that build an error or a message
    (``return SomeError(...)``, or a name ending in ``message``/``error``/``hint``)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            found += _strings(node.exc)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            builds_error = any(
                isinstance(r, ast.Return) and isinstance(r.value, ast.Call)
                and isinstance(r.value.func, ast.Name) and r.value.func.id.endswith("Error")
                for r in ast.walk(node)
            )
            if builds_error or re.search(r"(message|error|hint|problem)$", node.name.lower()):
                found += [s for r in ast.walk(node) if isinstance(r, ast.Return) and r.value is not None
                          for s in _strings(r.value)]
    return found


def suggested_flags() -> dict[str, set[str]]:
    """Source file (relative) → the flags its error messages name."""
    out: dict[str, set[str]] = {}
    for path in sorted([*ROOT.glob("zoo/**/*.py"), *ROOT.glob("plugins/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        flags = {m.group(1) for s in _message_strings(tree) for m in FLAG.finditer(s)} - FOREIGN
        if flags:
            out[path.relative_to(ROOT).as_posix()] = flags
    return out


def command_flags() -> tuple[dict[str, set[str]], set[str]]:
    """Each sub-command's long options, from the real parser, and the top-level ones (``--plugin``)."""
    import argparse

    from zoo.cli import build_parser

    parser = build_parser()
    top = {o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--")}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    def options(p: argparse.ArgumentParser) -> set[str]:  # with those of nested actions (zoo cache prune)
        found = {o[2:] for a in p._actions for o in a.option_strings if o.startswith("--")}
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for nested in a.choices.values():
                    found |= options(nested)
        return found

    return {name: options(p) for name, p in sub.choices.items()}, top


def test_the_scan_finds_the_messages_it_is_meant_to_check():
    flags = suggested_flags()
    assert "skip-bad-images" in flags["zoo/data/datasets.py"]  # the truncated-image advice
    assert "db" in flags["zoo/results/database.py"] and "resume" in flags["zoo/training/runs.py"]


def test_every_flag_a_message_suggests_exists_on_the_commands_that_show_it():
    commands, top = command_flags()
    wrong = []
    for source, flags in suggested_flags().items():
        name = Path(source).stem
        if source.startswith("zoo/commands/") and name in commands:
            shown_by: tuple[str, ...] = (name,)
        else:
            shown_by = SHOWN_BY.get(source, ())
        for flag in sorted(flags - top):
            if shown_by:
                wrong += [f"{source}: --{flag} (zoo {c} has no such option)" for c in shown_by if flag not in commands[c]]
            elif not any(flag in opts for opts in commands.values()):
                wrong.append(f"{source}: --{flag} (no zoo command has it)")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_skip_bad_images_is_accepted_where_the_bad_image_message_offers_it(command, capsys):
    from zoo.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and "--skip-bad-images" in capsys.readouterr().out
