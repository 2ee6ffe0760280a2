"""Folders fsgen owns and atomic writes: fsgen deletes only what it wrote, never a foreign folder."""

import os
import stat

import pytest

from fsgen.core.io import atomic_directory, atomic_write_bytes, file_mode
from fsgen.core.owned import MARKER, owner_of, prepare_owned_dir, remove_owned


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_non_empty_foreign_folder_is_refused_and_untouched(tmp_path):
    folder = tmp_path / "data"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "weights.bin").write_bytes(b"precious")
    (folder / "paper.pdf").write_bytes(b"pdf")
    before = _snapshot(folder)
    with pytest.raises(ValueError, match=f"{folder} is not empty and fsgen did not make it"):
        prepare_owned_dir(folder, owner="token_logging")
    with pytest.raises(ValueError, match=f"{folder} is not a folder fsgen made"):
        remove_owned(folder)
    assert _snapshot(folder) == before and not (folder / MARKER).exists()


def test_new_and_empty_folders_are_taken_and_resumed(tmp_path):
    made = prepare_owned_dir(tmp_path / "a" / "b", owner="x")
    assert owner_of(made) == "x"
    (made / "out.txt").write_text("1")
    assert prepare_owned_dir(made, owner="x") == made  # a resume
    with pytest.raises(ValueError, match=f"{made} belongs to fsgen's 'x', not to 'y'"):
        prepare_owned_dir(made, owner="y")
    (tmp_path / "empty").mkdir()
    assert owner_of(prepare_owned_dir(tmp_path / "empty", owner="x")) == "x"
    (tmp_path / "file").write_text("a file")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        prepare_owned_dir(tmp_path / "file", owner="x")


def test_remove_owned_deletes_only_what_the_owner_writes(tmp_path):
    folder = prepare_owned_dir(tmp_path / "logs", owner="x", patterns=["shards/*.parquet"])
    (folder / "shards").mkdir()
    (folder / "shards" / "a.parquet").write_bytes(b"a")
    (folder / "notes.txt").write_text("a person's notes")
    with pytest.warns(UserWarning, match="kept 1 entries .* notes.txt"):
        removed = remove_owned(folder, owner="x")
    assert removed == [folder / "shards" / "a.parquet"]
    assert (folder / "notes.txt").read_text() == "a person's notes"
    assert not (folder / "shards").exists()
    only_ours = prepare_owned_dir(tmp_path / "ours", owner="x")
    (only_ours / "sub").mkdir()
    (only_ours / "sub" / "f").write_text("f")
    remove_owned(only_ours)
    assert not only_ours.exists()
    assert remove_owned(tmp_path / "never-made") == []


def test_adoption_of_unmarked_output_needs_the_owners_word(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "settings.json").write_text("{}")
    with pytest.raises(ValueError, match="did not make it"):
        prepare_owned_dir(folder, owner="x", patterns=["settings.json"], adopt=lambda p: False)
    prepare_owned_dir(folder, owner="x", patterns=["settings.json"], adopt=lambda p: True)
    assert owner_of(folder) == "x"
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "settings.json").write_text("{}")
    (tmp_path / "mixed" / "other").write_text("other")
    with pytest.raises(ValueError, match="did not make it"):
        prepare_owned_dir(tmp_path / "mixed", owner="x", patterns=["settings.json"], adopt=bool)


def test_atomic_writes_take_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "m.json", b"{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644 == file_mode()
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_bytes(path, b"{}").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_atomic_directory_keeps_the_previous_version_on_failure(tmp_path):
    target = tmp_path / "rung"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-save")
    assert (target / "weights").read_text() == "v1"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rung"]  # no temporary left
