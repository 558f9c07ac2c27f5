"""Folder walks and ``**`` globs with symbolic links: every folder once, every image once, loops told (a link back to
a folder being walked is no failed input; links that never end in a file are); folders that cannot be listed are
failed inputs, and never stop the others from being scored."""
import json
import os

import pytest

from icrt.runtime.cli import main
from icrt.runtime.scoring.inputs import LOOP_NOTE, collect
from tests.images import textured


@pytest.fixture
def tree(tmp_path):
    """imgs/{a.png, sub/b.png, sub/up -> imgs (a loop), twin -> sub, ext -> ../other, ext2 -> ../other};
    other/o.png outside; l1.png -> l2.png -> l1.png (a loop that never ends in a file)."""
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    for i, p in enumerate([imgs / "a.png", imgs / "sub" / "b.png", tmp_path / "other" / "o.png"]):
        textured(40, 40, seed=i).save(p)
    (imgs / "sub" / "up").symlink_to("..")
    (imgs / "twin").symlink_to("sub")
    (imgs / "ext").symlink_to("../other")
    (imgs / "ext2").symlink_to("../other")
    (imgs / "l1.png").symlink_to("l2.png")
    (imgs / "l2.png").symlink_to("l1.png")
    return imgs


def names(paths, root):
    return [os.path.relpath(p, root) for p in paths]


def test_recursive_folder_walk_enters_each_folder_once(tree):
    problems, notes = {}, []
    paths = collect([tree], recursive=True, problems=problems, notes=notes)
    assert names(paths, tree) == ["a.png", "l1.png", "l2.png", "ext/o.png", "sub/b.png"]
    assert problems == {str(tree / "l1.png"): "symlink loop", str(tree / "l2.png"): "symlink loop"}
    assert [p for p, _ in notes] == [str(tree / "sub" / "up")]  # told, not an input


def test_recursive_glob_is_finite_and_has_no_duplicates(tree, monkeypatch):
    problems, notes = {}, []
    paths = collect([f"{tree}/**/*.png"], recursive=True, problems=problems, notes=notes)
    assert names(paths, tree) == ["a.png", "ext/o.png", "l1.png", "l2.png", "sub/b.png"]
    assert [p for p, _ in notes] == [str(tree / "sub" / "up")] and str(tree / "sub" / "up") not in problems
    paths = collect([f"{tree}/**"], recursive=True)  # matched folders are listed, links to them not again
    assert sorted(names(paths, tree)) == ["a.png", "ext/o.png", "l1.png", "l2.png", "sub/b.png"]
    monkeypatch.chdir(tree)  # a relative pattern gives relative names
    assert collect(["**/b.png"], recursive=True) == ["sub/b.png"]


def test_glob_semantics_kept(tmp_path, monkeypatch):
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for p in ["top.png", "x/one.png", "x/y/two.jpg", "x/.dot.png", ".hidden/h.png"]:
        (tmp_path / p).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert collect(["**/*.png"], recursive=True) == ["top.png", "x/one.png"]  # like glob: no hidden names
    assert collect(["x/**/*.jpg"], recursive=True) == ["x/y/two.jpg"]
    assert collect(["**/*.jpg"]) == ["**/*.jpg"]  # without --recursive ** is *: no match, kept for its error


def test_cli_reports_loops_once_each_image_once(capsys, square_bundle, tree):
    bundle = square_bundle
    for argv in ([str(tree), "--recursive"], [f"{tree}/**/*.png", "--recursive"]):
        code = main(["score", *argv, "-m", bundle, "--format", "jsonl", "--quiet"])
        out, err = capsys.readouterr()
        recs = [json.loads(line) for line in out.splitlines()]
        scored = sorted(os.path.relpath(r["image"], tree) for r in recs if "score" in r)
        assert code == 1 and scored == ["a.png", "ext/o.png", "sub/b.png"]
        assert err.splitlines() == [f"icrt: {tree}/sub/up: {LOOP_NOTE}", f"icrt: {tree}/l1.png: symlink loop",
                                    f"icrt: {tree}/l2.png: symlink loop", "icrt: 2 of 5 file(s) could not be scored"]
        assert "broken" not in err


def test_a_folder_loop_alone_is_no_failed_input(capsys, square_bundle, tmp_path):
    """N18: every image scored, a link back to a folder being walked told on stderr: exit 0."""
    (tmp_path / "sub").mkdir()
    textured(40, 40, seed=1).save(tmp_path / "sub" / "b.png")
    (tmp_path / "sub" / "up").symlink_to("..")
    code = main(["score", str(tmp_path), "--recursive", "-m", square_bundle, "--format", "jsonl", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and len(out.splitlines()) == 1
    assert err.splitlines() == [f"icrt: {tmp_path}/sub/up: {LOOP_NOTE}"]


@pytest.fixture
def locked(tmp_path, monkeypatch):
    """ok.png, tree/{a.png, locked/b.png}, lockeddir/c.png, where listing the folders named locked* fails with
    EACCES (os.scandir patched: root may list anything, and the tests must not depend on who runs them)."""
    (tmp_path / "tree" / "locked").mkdir(parents=True)
    (tmp_path / "lockeddir").mkdir()
    for i, p in enumerate(["ok.png", "tree/a.png", "tree/locked/b.png", "lockeddir/c.png"]):
        textured(40, 40, seed=i).save(tmp_path / p)
    real = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path).rstrip("/")).startswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    return tmp_path


def test_unreadable_folders_are_failed_inputs_and_the_rest_is_scored(capsys, square_bundle, locked):
    """N7: with --recursive an unreadable folder is one line and a failed input (exit 1); an unreadable folder
    argument does not stop the good files from being scored."""
    for argv, failed in (([f"{locked}/tree", "--recursive"], f"{locked}/tree/locked"),
                         ([f"{locked}/ok.png", f"{locked}/lockeddir"], f"{locked}/lockeddir")):
        code = main(["score", *argv, "-m", square_bundle, "--format", "jsonl"])
        out, err = capsys.readouterr()
        recs = [json.loads(line) for line in out.splitlines()]
        assert code == 1 and sum("score" in r for r in recs) == 1
        assert {"image": failed, "error": "cannot list this folder (permission denied)"} in recs
        assert f"icrt: {failed}: cannot list this folder (permission denied)" in err.splitlines()


def test_unreadable_folder_in_a_recursive_glob(locked, monkeypatch):
    problems = {}
    monkeypatch.chdir(locked)
    assert collect(["tree/**/*.png"], recursive=True, problems=problems) == ["tree/a.png", "tree/locked"]
    assert problems == {"tree/locked": "cannot list this folder (permission denied)"}


def test_a_file_behind_a_folder_that_cannot_be_searched_is_permission_denied(tmp_path, monkeypatch):
    from icrt.runtime.scoring.preprocess import ImageError, check_image_file

    real = os.stat

    def stat(path, *a, **k):
        if "/locked/" in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, *a, **k)
    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(ImageError, match="permission denied"):
        check_image_file(str(tmp_path / "locked" / "x.png"))
