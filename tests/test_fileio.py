"""Atomic output: files and directories appear whole or not at all."""

import os

import pytest

from loa_meta.fileio import atomic_dir, atomic_path, atomic_write_text, write_json_atomic


def test_atomic_path_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "table.md"
    atomic_write_text(str(target), "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("writer crashed")
    assert target.read_text() == "first"
    assert sorted(os.listdir(target.parent)) == ["table.md"]
    write_json_atomic(str(tmp_path / "c.json"), {"b": 1, "a": [2]})
    assert (tmp_path / "c.json").read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}'
    with pytest.raises(ValueError, match="does not exist"):
        with atomic_path(str(tmp_path / "missing" / "m.npy"), create_dirs=False):
            pass


def test_atomic_dir_swaps_whole_directories(tmp_path):
    out = tmp_path / "prepared"
    with atomic_dir(str(out)) as tmp:
        (open(os.path.join(tmp, "a.npy"), "w")).close()
    assert sorted(os.listdir(out)) == ["a.npy"]
    with pytest.raises(KeyError):
        with atomic_dir(str(out)) as tmp:
            (open(os.path.join(tmp, "b.npy"), "w")).close()
            raise KeyError("crash")
    assert sorted(os.listdir(out)) == ["a.npy"]
    with atomic_dir(str(out)) as tmp:
        (open(os.path.join(tmp, "c.npy"), "w")).close()
    assert sorted(os.listdir(out)) == ["c.npy"]
    assert sorted(os.listdir(tmp_path)) == ["prepared"]


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                       (0o002, 0o664, 0o775)])
def test_written_files_and_directories_respect_the_umask(tmp_path, umask, file_mode, dir_mode):
    import numpy as np

    from loa_meta.fileio import current_umask

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_text(str(tmp_path / "table.md"), "x")
        write_json_atomic(str(tmp_path / "COMPLETE.json"), {"a": 1})
        with atomic_path(str(tmp_path / "x.npy"), suffix=".npy") as tmp:
            np.save(tmp, np.zeros(3))
        with atomic_dir(str(tmp_path / "out")) as d:
            with open(os.path.join(d, "f.txt"), "w") as f:
                f.write("y")
        plain = tmp_path / "plain.txt"  # what an ordinary write gives under this umask
        plain.write_text("z")
    finally:
        os.umask(old)
    for name in ("table.md", "COMPLETE.json", "x.npy", "plain.txt"):
        assert oct(os.stat(tmp_path / name).st_mode & 0o777) == oct(file_mode), name
    assert oct(os.stat(tmp_path / "out").st_mode & 0o777) == oct(dir_mode)
