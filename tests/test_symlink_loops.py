"""A symbolic link loop is called one wherever a path is checked (issue 17, item 7): Python's
``Path.exists()`` answers False for a loop, so it used to read as "does not exist" (or as a raw OSError)."""

from __future__ import annotations

import pytest

from zoo.cli import main as zoo_main
from zoo.errors import ZooError
from zoo.files import missing_reason


@pytest.fixture
def loop(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def test_missing_reason_tells_a_loop_a_broken_link_and_a_missing_file_apart(tmp_path, loop):
    assert "symbolic link loop" in missing_reason(loop) and "b.json" in missing_reason(loop)
    broken = tmp_path / "broken"
    broken.symlink_to(tmp_path / "gone")
    assert "broken symbolic link" in missing_reason(broken) and "gone" in missing_reason(broken)
    assert missing_reason(tmp_path / "nothing") == "does not exist"
    assert missing_reason(tmp_path) is None


def test_library_path_checks_name_the_loop(loop):
    from zoo.data.datasets import open_image, read_json
    from zoo.evaluation.caption_stats import read_caption_file
    from zoo.registry.recipes import parse_file
    from zoo.training.runs import RunSpec

    calls = [lambda: read_json(loop, "COCO captions file"), lambda: open_image(loop),
             lambda: read_caption_file(str(loop)), lambda: RunSpec.from_file(loop), lambda: parse_file(loop)]
    for call in calls:
        with pytest.raises(ZooError) as err:
            call()
        assert "symbolic link loop" in str(err.value) and "does not exist" not in str(err.value), err.value


@pytest.mark.parametrize("command", [["caption", "{ckpt}", "{loop}"], ["eval", "{loop}", "--data", "shapes"],
                                     ["caption", "{loop}", "x.png"], ["info", "{loop}"]])
def test_commands_name_the_loop(tmp_path, loop, capsys, command):
    import zoo

    from .helpers import tiny_model

    ckpt = zoo.save(tiny_model(), tmp_path / "tiny.safetensors")
    rc = zoo_main([c.format(ckpt=ckpt, loop=loop) for c in command])
    err = capsys.readouterr().err
    assert rc == 2 and "symbolic link loop" in err and "Traceback" not in err, err


def test_loading_a_checkpoint_through_a_loop_names_the_loop(loop):
    import zoo
    from zoo.models.checkpoint import read_metadata

    for call in (lambda: zoo.load(loop), lambda: read_metadata(loop)):
        with pytest.raises(ZooError) as err:
            call()
        assert "symbolic link loop" in str(err.value) and "does not exist" not in str(err.value), err.value
