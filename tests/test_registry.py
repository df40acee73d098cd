"""The plugin system: names, patterns, duplicates, broken plugins, plugins loaded by hand."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import types

import pytest

import zoo
import zoo.manager
from zoo.errors import DuplicateNameError, PluginLoadError, UnknownNameError
from zoo.registry import Registry


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
    zoo.manager.reset()
    zoo.load_plugin(str(raising), name="raising")
    with pytest.warns(UserWarning, match="raising"):
        reg = zoo.get_registry()
    assert "raising" in reg.failed_plugins and "cannot register today" in reg.failed_plugins["raising"]
    assert "gru" in reg.names("decoders")  # the rest still load


def test_broken_entry_point_does_not_take_others_down(fresh_registry, monkeypatch):
    real = zoo.manager._entry_points

    class FakeDist:
        name = "some-third-party"

    class BrokenEP:
        name = "broken-ep"
        value = "does_not_exist_module"
        dist = FakeDist()

        def load(self):
            raise ImportError("No module named 'does_not_exist_module'")

    monkeypatch.setattr(zoo.manager, "_entry_points", lambda: real() + [BrokenEP()])
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "0")
    with pytest.warns(UserWarning, match="broken-ep"):
        reg = zoo.get_registry()
    assert "broken-ep" in reg.failed_plugins
    assert "does_not_exist_module" in reg.failed_plugins["broken-ep"]
    assert {"gru", "lstm"} <= set(reg.names("decoders"))
    with pytest.raises(UnknownNameError, match="broken-ep"):
        reg.get("decoder", "from-broken")  # the failure is named where it matters


def test_autoload_switch_skips_third_party(fresh_registry, monkeypatch):
    real = zoo.manager._entry_points

    class FakeDist:
        name = "some-third-party"

    class EP:
        name = "third"
        value = "x"
        dist = FakeDist()

        def load(self):  # pragma: no cover - must not be called
            raise AssertionError("third-party entry point loaded with autoload disabled")

    monkeypatch.setattr(zoo.manager, "_entry_points", lambda: real() + [EP()])
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
