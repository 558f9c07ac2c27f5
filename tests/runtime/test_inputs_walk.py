"""Folder walks and ``**`` globs with symbolic links: every folder once, every image once, loops reported."""
import json
import os

import pytest

from runtime.cli import main
from runtime.inputs import collect
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
    problems = {}
    paths = collect([tree], recursive=True, problems=problems)
    assert names(paths, tree) == ["a.png", "l1.png", "l2.png", "ext/o.png", "sub/b.png", "sub/up"]
    assert problems == {str(tree / "sub" / "up"): "symlink loop", str(tree / "l1.png"): "symlink loop",
                        str(tree / "l2.png"): "symlink loop"}


def test_recursive_glob_is_finite_and_has_no_duplicates(tree, monkeypatch):
    problems = {}
    paths = collect([f"{tree}/**/*.png"], recursive=True, problems=problems)
    assert names(paths, tree) == ["a.png", "ext/o.png", "l1.png", "l2.png", "sub/b.png", "sub/up"]
    assert problems[str(tree / "sub" / "up")] == "symlink loop"
    paths = collect([f"{tree}/**"], recursive=True)  # matched folders are listed, links to them not again
    assert sorted(names(paths, tree)) == ["a.png", "ext/o.png", "l1.png", "l2.png", "sub/b.png", "sub/up"]
    monkeypatch.chdir(tree)  # a relative pattern gives relative names
    assert collect(["**/b.png"], recursive=True) == ["sub/b.png", "sub/up"]


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
        code = main(["score", *argv, "-m", bundle, "--format", "jsonl"])
        out, err = capsys.readouterr()
        recs = [json.loads(line) for line in out.splitlines()]
        scored = sorted(os.path.relpath(r["image"], tree) for r in recs if "score" in r)
        assert code == 1 and scored == ["a.png", "ext/o.png", "sub/b.png"]
        assert err.splitlines() == [f"icrt: {tree}/l1.png: symlink loop", f"icrt: {tree}/l2.png: symlink loop",
                                    f"icrt: {tree}/sub/up: symlink loop", "icrt: 3 of 6 file(s) could not be scored"]
        assert "broken" not in err
