"""Code written against the module paths from before the subpackages (``zoo.objective``, ``zoo.stats``,
``zoo.tokenizer``, … as docs/scst.md and docs/leaderboard.md showed them) keeps working, with a
DeprecationWarning naming the new path."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import warnings

import pytest

import zoo
from zoo._compat import MOVED
from zoo.contracts.tokenizer import SPECIAL_TOKENS
from zoo.evaluation.bootstrap import paired_bootstrap
from zoo.training.objective import Objective


def test_an_old_path_gives_the_same_objects_and_says_where_they_went():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import zoo\n"
        "try:\n"
        "    from zoo.objective import Objective\n"
        "except DeprecationWarning as w:\n"
        "    print(w)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "zoo.objective moved to zoo.training.objective" in out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("zoo.tokenizer")
    assert old.SPECIAL_TOKENS is SPECIAL_TOKENS
    with warnings.catch_warnings():  # warned above, or by an earlier test in this process
        warnings.simplefilter("ignore", DeprecationWarning)
        from zoo.objective import Objective as OldObjective
        from zoo.stats import paired_bootstrap as old_bootstrap

    assert OldObjective is Objective and old_bootstrap is paired_bootstrap


def test_every_old_path_names_modules_that_exist_and_a_typo_is_still_an_error():
    for old, targets in MOVED.items():
        for target in targets:
            importlib.import_module(target)
        # an alias for a module that exists again would be dead: the real module always wins
        assert importlib.util.find_spec(old).origin is None, f"{old} is a real module again: drop its alias"
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("zoo.objectives")  # not a path zoo ever had
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("zoo.decoder")
    assert old.Decoder is zoo.Decoder
    with pytest.raises(AttributeError, match="moved to zoo.contracts.decoder"):
        old.NoSuchThing
