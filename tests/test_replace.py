"""`write_replacing`: a model file or folder is built beside its destination and renamed into place."""

from __future__ import annotations

import pytest

from easyanimate.models.replace import write_replacing


def test_a_failed_write_leaves_the_old_folder_and_a_good_one_replaces_it(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")

    def broken(tmp):
        import os

        os.makedirs(tmp)
        open(os.path.join(tmp, "half.txt"), "w").close()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_replacing(str(target), broken)
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]

    def good(tmp):
        import os

        os.makedirs(tmp)
        open(os.path.join(tmp, "new.txt"), "w").close()
        return 7

    assert write_replacing(str(target), good) == 7  # a leftover .tmp from the failed write is cleared first
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert not (tmp_path / "model.tmp").exists()
    assert write_replacing(str(tmp_path / "file.bin"), lambda tmp: open(tmp, "w").write("x")) == 1
    assert (tmp_path / "file.bin").read_text() == "x"
