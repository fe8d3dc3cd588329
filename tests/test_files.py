"""Directories written whole or not at all (``files.replacing_directory``)."""
import pytest

from ernie_tiny.files import TMP_PREFIX, replacing_directory


def test_a_finished_block_replaces_the_directory_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with replacing_directory(target) as tmp:
        assert tmp.is_dir() and tmp.name.startswith(TMP_PREFIX) and not list(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").is_file()  # the old directory stays until the block ends
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failing_block_keeps_the_old_directory_and_removes_the_temporary(tmp_path):
    target = tmp_path / "deep" / "model"
    with pytest.raises(RuntimeError):
        with replacing_directory(target, tag="-7") as tmp:
            assert tmp.name == f"{TMP_PREFIX}model-7"
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("write failed")
    assert not list((tmp_path / "deep").iterdir())  # no target, no temporary
