"""The plugin system: names, patterns, duplicates, broken plugins, plugins loaded by hand."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import textwrap
import types

import pytest

import zoo
import zoo.registry.manager
from zoo.errors import DuplicateNameError, PluginLoadError, UnknownNameError
from zoo.cli import main
from zoo.registry.registry import Registry


class _Dec(zoo.Decoder):
    """A stand-in decoder."""

    def __init__(self, vocab_size: int, feature_dim: int, hidden_size: int = 7):
        super().__init__(vocab_size, feature_dim)


def test_builtins_are_registered_through_entry_points():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="zoo")}
    for name in ("gru", "gru-stacked", "gru-attn", "lstm"):
        assert name in eps, f"built-in {name} must be an entry point of group 'zoo'"
        assert eps[name].dist.name == "caption-zoo"
    assert set(zoo.list_names("decoders")) >= {"gru", "gru-stacked", "gru-attn", "lstm"}
    entry = zoo.get_registry().get("decoder", "gru-attn")
    assert entry.plugin == "gru-attn" and entry.module.startswith("zoo_plugins.decoders")
    # the built-in package is installed under the zoo's own name, never as a bare `plugins`
    assert "plugins" not in sys.modules or not hasattr(sys.modules["plugins"], "decoders")


def test_list_with_fnmatch_patterns():
    assert zoo.list_names("decoders", "gru*") == ["gru", "gru-attn", "gru-stacked"]
    assert zoo.list_names("decoders", ["lstm", "gru-a*"]) == ["gru-attn", "lstm"]
    # patterns are normalised like names: get("decoder", "GRU_Attn") works, so do these
    assert zoo.list_names("decoders", "GRU*") == ["gru", "gru-attn", "gru-stacked"]
    assert zoo.list_names("decoders", "gru_*") == ["gru-attn", "gru-stacked"]
    assert zoo.list_names("decoders", [" Lstm ", "GRU_A*"]) == ["gru-attn", "lstm"]
    convnext = zoo.list_names("encoders", "convnext*")
    assert convnext and all(n.startswith("convnext") for n in convnext)
    assert len(zoo.list_names("encoders")) > 1000  # every timm backbone


def test_unknown_name_suggests_closest():
    reg = zoo.get_registry()
    with pytest.raises(UnknownNameError) as exc:
        reg.get("decoder", "gru-atn")
    msg = str(exc.value)
    assert "unknown decoder 'gru-atn'" in msg and "gru-attn" in msg and "zoo list decoders" in msg
    with pytest.raises(UnknownNameError, match="resnet10t"):
        reg.get("encoder", "resnet10")
    with pytest.raises(UnknownNameError, match="Did you mean"):
        zoo.create_model(encoder="resnet10t", decoder="lstn", tokenizer="word", captions=["a b"])


def test_duplicate_name_names_both_plugins():
    reg = Registry()
    reg.current_plugin = "first-plugin"
    reg.add_decoder("twin", _Dec)
    reg.current_plugin = "second-plugin"
    with pytest.raises(DuplicateNameError) as exc:
        reg.add_decoder("twin", _Dec)
    msg = str(exc.value)
    assert "'first-plugin'" in msg and "'second-plugin'" in msg and "decoder 'twin'" in msg
    assert "Uninstall or disable one" in msg


def test_names_must_be_lower_case_hyphenated():
    reg = Registry()
    with pytest.raises(ValueError, match="'my-dec'"):
        reg.add_decoder("My_Dec", _Dec)


def test_duplicate_against_builtin_through_manager(fresh_registry):
    plugin = types.ModuleType("clashing_plugin")

    @zoo.hookimpl
    def zoo_register(registry):
        registry.add_decoder("gru", _Dec)

    plugin.zoo_register = zoo_register
    zoo.get_registry()
    with pytest.raises(DuplicateNameError) as exc:
        zoo.load_plugin(plugin, name="clashing")
    msg = str(exc.value)
    assert "plugin 'gru'" in msg and "plugin 'clashing'" in msg


def test_broken_plugin_is_reported_and_others_still_load(fresh_registry, tmp_path):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("import zoo\nraise RuntimeError('boom at import')\n")
    with pytest.raises(PluginLoadError) as exc:
        zoo.load_plugin(str(bad))
    assert "broken_plugin.py" in str(exc.value) and "boom at import" in str(exc.value)

    raising = tmp_path / "raising_plugin.py"
    raising.write_text(
        textwrap.dedent(
            """
            import zoo

            @zoo.hookimpl
            def zoo_register(registry):
                raise ValueError("cannot register today")
            """
        )
    )
    zoo.registry.manager.reset()
    with pytest.raises(PluginLoadError) as exc:  # loaded by hand: its failure is the caller's error
        zoo.load_plugin(str(raising), name="raising")
    assert "'raising'" in str(exc.value) and "cannot register today" in str(exc.value)
    reg = zoo.get_registry()
    assert "gru" in reg.names("decoders")  # the rest still load


def test_broken_entry_point_does_not_take_others_down(fresh_registry, monkeypatch):
    real = zoo.registry.manager._entry_points

    class FakeDist:
        name = "some-third-party"

    class BrokenEP:
        name = "broken-ep"
        value = "does_not_exist_module"
        dist = FakeDist()

        def load(self):
            raise ImportError("No module named 'does_not_exist_module'")

    monkeypatch.setattr(zoo.registry.manager, "_entry_points", lambda: real() + [BrokenEP()])
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "0")
    with pytest.warns(UserWarning, match="broken-ep"):
        reg = zoo.get_registry()
    assert "broken-ep" in reg.failed_plugins
    assert "does_not_exist_module" in reg.failed_plugins["broken-ep"]
    assert {"gru", "lstm"} <= set(reg.names("decoders"))
    with pytest.raises(UnknownNameError, match="broken-ep"):
        reg.get("decoder", "from-broken")  # the failure is named where it matters


def test_autoload_switch_skips_third_party(fresh_registry, monkeypatch):
    real = zoo.registry.manager._entry_points

    class FakeDist:
        name = "some-third-party"

    class EP:
        name = "third"
        value = "x"
        dist = FakeDist()

        def load(self):  # pragma: no cover - must not be called
            raise AssertionError("third-party entry point loaded with autoload disabled")

    monkeypatch.setattr(zoo.registry.manager, "_entry_points", lambda: real() + [EP()])
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = zoo.get_registry()
    assert "third" not in reg.failed_plugins and "gru" in reg.names("decoders")


def test_load_plugin_by_path_adds_names(fresh_registry, tmp_path):
    mod = tmp_path / "my_decoder_plugin.py"
    mod.write_text(
        textwrap.dedent(
            """
            import zoo

            class Mine(zoo.Decoder):
                '''My decoder.'''
                def __init__(self, vocab_size, feature_dim, depth: int = 3):
                    super().__init__(vocab_size, feature_dim)

            @zoo.hookimpl
            def zoo_register(registry):
                registry.add_decoder("mine", Mine)
            """
        )
    )
    zoo.get_registry()  # already built: load_plugin must update it
    zoo.load_plugin(str(mod))
    entry = zoo.get_registry().get("decoder", "mine")
    assert entry.options() == {"vocab_size": entry.options()["vocab_size"], "feature_dim": entry.options()["feature_dim"], "depth": 3}
    assert entry.doc == "My decoder."
    with pytest.raises(PluginLoadError, match="no_such_module"):
        zoo.load_plugin("no_such_module_xyz")


# -- third-party entry points, faked: (distribution, entry-point name, module) ----------------------------
def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def _fake_entry_points(monkeypatch, *eps: tuple[str, str, types.ModuleType], first: bool = False) -> None:
    """Add entry points of group 'zoo' from other distributions (``first``: listed before ours)."""

    class Dist:
        def __init__(self, name):
            self.name = name

    class EP:
        def __init__(self, dist, name, module):
            self.dist, self.name, self.value, self._module = Dist(dist), name, module.__name__, module

        def load(self):
            return self._module

    real = zoo.registry.manager._entry_points
    fake = [EP(*ep) for ep in eps]
    monkeypatch.setattr(zoo.registry.manager, "_entry_points", lambda: fake + real() if first else real() + fake)
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "0")


def _adds_decoder(name: str):
    @zoo.hookimpl
    def zoo_register(registry):
        registry.add_decoder(name, _Dec)

    return zoo_register


def test_third_party_entry_point_named_like_a_builtin_is_kept(fresh_registry, monkeypatch):
    ours = _module("other_recipes", zoo_register=_adds_decoder("other-dec"))
    theirs = _module("another_recipes", zoo_register=_adds_decoder("another-dec"))
    # listed before the zoo's own entry points, with the names of built-ins
    _fake_entry_points(monkeypatch, ("other-dist", "recipes", ours), ("another-dist", "recipes", theirs), first=True)
    reg = zoo.get_registry()
    pm = zoo.get_plugin_manager()
    assert pm.get_plugin("recipes").__name__ == "zoo_plugins.recipes"  # the built-in keeps its name
    assert "gru-resnet50-coco" in zoo.list_models()  # and still loads
    assert reg.get("decoder", "other-dec").plugin == "other-dist:recipes"  # the third party is not dropped
    assert reg.get("decoder", "another-dec").plugin == "another-dist:recipes"
    assert not reg.failed_plugins


def test_plugin_taking_a_builtin_name_is_reported_and_skipped(fresh_registry, monkeypatch, capsys):
    @zoo.hookimpl
    def zoo_register(registry):
        registry.add_decoder("evil-extra", _Dec)
        registry.add_decoder("gru", _Dec)  # taken by the built-in

    _fake_entry_points(monkeypatch, ("evil-dist", "gru", _module("evil_plugin", zoo_register=zoo_register)))
    with pytest.warns(UserWarning, match="evil-dist:gru"):
        reg = zoo.get_registry()
    why = reg.failed_plugins["evil-dist:gru"]
    assert "plugin 'gru'" in why and "plugin 'evil-dist:gru'" in why and "decoder 'gru'" in why
    assert reg.get("decoder", "gru").plugin == "gru"  # the built-in keeps its name
    assert "evil-extra" not in reg.names("decoders")  # nothing half-registered from the failed plugin
    # every command still works, and says what was skipped
    rc = main(["list", "datasets"])
    out, err = capsys.readouterr()
    assert rc == 0 and "shapes" in out.split()
    assert "warning: plugin 'evil-dist:gru' failed to load" in err and "plugin 'gru'" in err
    rc = main(["info", "gru"])
    out, err = capsys.readouterr()
    assert rc == 0 and "plugin: gru" in out and "warning: plugin 'evil-dist:gru' failed to load" in err


def test_autoloaded_plugin_raising_in_zoo_register_is_reported(fresh_registry, monkeypatch):
    @zoo.hookimpl
    def zoo_register(registry):
        raise ValueError("cannot register today")

    _fake_entry_points(monkeypatch, ("raising-dist", "raising", _module("raising_plugin", zoo_register=zoo_register)))
    with pytest.warns(UserWarning, match="raising"):
        reg = zoo.get_registry()
    assert "cannot register today" in reg.failed_plugins["raising"]
    assert {"gru", "lstm"} <= set(reg.names("decoders"))


def test_hookimpl_with_specname_registers(fresh_registry, monkeypatch):
    @zoo.hookimpl(specname="zoo_register")
    def add_my_names(registry):
        registry.add_decoder("spec-auto", _Dec)

    @zoo.hookimpl(specname="zoo_register")
    def register_by_hand(registry):
        registry.add_decoder("spec-hand", _Dec)

    _fake_entry_points(monkeypatch, ("spec-dist", "spec-auto", _module("spec_auto", add_my_names=add_my_names)))
    reg = zoo.get_registry()
    zoo.load_plugin(_module("spec_hand", register_by_hand=register_by_hand), name="spec-hand")
    assert not reg.failed_plugins
    assert reg.get("decoder", "spec-auto").plugin == "spec-auto"
    assert reg.get("decoder", "spec-hand").plugin == "spec-hand"


# -- --plugin on the command line ---------------------------------------------------------------------
_MY_PLUGIN = """
import zoo

class Mine(zoo.Decoder):
    def __init__(self, vocab_size, feature_dim, depth: int = 3):
        super().__init__(vocab_size, feature_dim)

@zoo.hookimpl
def zoo_register(registry):
    registry.add_decoder("mine-from-cli", Mine)
"""


def test_plugin_option_after_the_sub_command(fresh_registry, tmp_path, capsys):
    f = tmp_path / "cli_after_plugin.py"
    f.write_text(_MY_PLUGIN)
    rc = main(["list", "decoders", "--plugin", str(f)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "mine-from-cli" in out.split()


def test_plugin_option_failing_plugin_is_an_error(fresh_registry, tmp_path, capsys):
    f = tmp_path / "cli_bad_plugin.py"
    f.write_text("import zoo\n\n@zoo.hookimpl\ndef zoo_register(registry):\n    raise RuntimeError('kaboom')\n")
    rc = main(["--plugin", str(f), "info", "gru"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "cli_bad_plugin.py" in err and "RuntimeError: kaboom" in err
    dup = tmp_path / "cli_dup_plugin.py"
    dup.write_text(_MY_PLUGIN.replace("mine-from-cli", "gru"))
    rc = main(["info", "gru", "--plugin", str(dup)])
    err = capsys.readouterr().err
    assert rc == 2 and "cli_dup_plugin.py" in err and "plugin 'gru'" in err


def test_plugin_option_finds_a_module_in_the_current_directory(fresh_registry, tmp_path, capsys, monkeypatch):
    (tmp_path / "cwd_plugin_mod.py").write_text(_MY_PLUGIN)
    monkeypatch.chdir(tmp_path)
    # as under the `zoo` console script: the current directory is not on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path), os.getcwd())])
    monkeypatch.delitem(sys.modules, "cwd_plugin_mod", raising=False)
    try:
        rc = main(["--plugin", "cwd_plugin_mod", "list", "decoders", "mine-*"])
        out, err = capsys.readouterr()
    finally:
        sys.modules.pop("cwd_plugin_mod", None)
    assert rc == 0, err
    assert out.split() == ["mine-from-cli"]


# -- a folder named zoo/ in the working directory -------------------------------------------------------------
_SHADOWED_PLUGIN = '''
import zoo

@zoo.hookimpl
def zoo_register(registry):
    registry.add_metric("never-registered", object)
'''


@pytest.mark.parametrize("how", ["python -m zoo", "PYTHONPATH=.", "zoo/__init__.py"])
def test_a_zoo_folder_in_the_working_directory_is_named_as_the_cause(tmp_path, how):
    """A folder ``zoo/`` (run outputs, say) where Python looks first shadows the package: the real plugins
    then each failed with "module 'zoo' has no attribute 'hookimpl'". The error names the folder instead."""
    import subprocess

    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "notes.txt").write_text("my runs\n")
    if how == "zoo/__init__.py":
        (tmp_path / "zoo" / "__init__.py").write_text("")
    (tmp_path / "my_plugin.py").write_text(_SHADOWED_PLUGIN)
    env = {**os.environ, "ZOO_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTHONPATH", None)
    if how == "PYTHONPATH=.":  # the console script, with the current directory on the path
        cmd = [os.path.join(os.path.dirname(sys.executable), "zoo")]
        env["PYTHONPATH"] = "."
    else:
        cmd = [sys.executable, "-m", "zoo"]
    proc = subprocess.run(cmd + ["--plugin", "my_plugin.py", "list", "decoders"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert f"the folder {tmp_path / 'zoo'} shadows the zoo package" in err, err
    assert "Rename that folder" in err and "another directory" in err
    assert "has no attribute" not in err and "Traceback" not in err and err.count("\n") == 1


def test_load_plugin_takes_one_hook_function(fresh_registry):
    """A notebook defines its ``zoo_register`` inline; passing the function itself registered nothing
    before (pluggy found no hooks among a function's attributes) and now registers it."""

    @zoo.hookimpl
    def zoo_register(registry):
        registry.add_decoder("inline-dec", _Dec)

    zoo.load_plugin(zoo_register, name="inline")
    assert zoo.get_registry().get("decoder", "inline-dec").plugin == "inline"


# -- a plugin that exits: never a silent `zoo` exit 0 (issue 17, item 8) -----------------------------------
@pytest.mark.parametrize("where, code", [
    ("import", "import sys\nsys.exit(0)\n"),
    ("import", "raise SystemExit(3)\n"),
    ("zoo_register", "import sys, zoo\n\n@zoo.hookimpl\ndef zoo_register(registry):\n    sys.exit(0)\n"),
])
def test_a_plugin_that_exits_is_reported_not_obeyed(fresh_registry, tmp_path, capsys, where, code):
    f = tmp_path / "exiting_plugin.py"
    f.write_text(code)
    rc = main(["--plugin", str(f), "list", "decoders"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "", (rc, out, err)
    assert "exiting_plugin.py" in err and "SystemExit" in err and where in err and "Traceback" not in err, err
    with pytest.raises(PluginLoadError, match="exiting_plugin.py.*SystemExit"):
        zoo.load_plugin(str(f))


def test_an_autoloaded_plugin_that_exits_is_skipped(fresh_registry, monkeypatch):
    @zoo.hookimpl
    def zoo_register(registry):
        raise SystemExit(0)

    _fake_entry_points(monkeypatch, ("exit-dist", "exiting", _module("exiting_plugin", zoo_register=zoo_register)))
    with pytest.warns(UserWarning, match="exiting"):
        reg = zoo.get_registry()
    assert "SystemExit" in reg.failed_plugins["exiting"]
    assert {"gru", "lstm"} <= set(reg.names("decoders"))
