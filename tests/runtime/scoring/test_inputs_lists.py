"""--files-from LIST and --shard I/N (runtime/worklist.py) on `icrt score`; torch- and pyarrow-free."""
import json
import os

import pytest

from icrt.runtime.scoring.inputs import MAX_LINE, parse_shard, read_path_list, select_shard, shard_of
from tests.runtime.fixtures import broken_inputs, run_cli, sample_images


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard(" 3 / 4 ") == (3, 4)
    for bad in ("4/4", "1/0", "-1/4", "a/b", "1", "", "1/2/3", "0.5/2", "\u0660/\u0662", "1/\uff12", "\u00b9/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_shards_partition_and_are_stable():
    paths = [f"photos/{i:05d}.jpg" for i in range(2000)] + [os.fsdecode(b"caf\xe9.jpg"), "a,b c#.png"]
    for n in (1, 2, 3, 7):
        shards = [select_shard(paths, (i, n)) for i in range(n)]
        assert sorted(sum(shards, [])) == sorted(paths)  # every path in exactly one shard
        assert sum(len(s) for s in shards) == len(paths)
        if n > 1:
            assert all(len(s) > len(paths) / n / 2 for s in shards)  # roughly even
    # the split depends on the path string only: these values must never change (users split work by them)
    assert [shard_of(p, 4) for p in ("a.jpg", "./a.jpg", "photos/00001.jpg", "/data/x/y.png")] == [1, 3, 2, 0]
    assert [shard_of(p, 1000) for p in ("a.jpg", "photos/00001.jpg", "/data/x/y.png")] == [449, 474, 292]


def test_read_path_list(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"a.png\r\n\n  \nsub dir/b c.jpg\n" + b"caf\xe9.png\n" + b"#not-a-comment.png\n" + b"*.png")
    assert read_path_list(str(lst)) == ["a.png", "sub dir/b c.jpg", os.fsdecode(b"caf\xe9.png"), "#not-a-comment.png",
                                        "*.png"]


@pytest.mark.parametrize("case", ["missing", "folder", "nul", "long", "image"])
def test_bad_list_files(tmp_path, case):
    from icrt.runtime.base.errors import UserInputError

    lst = str(tmp_path / "list.txt")
    if case == "folder":
        os.mkdir(lst)
    elif case == "nul":
        open(lst, "wb").write(b"a.png\nb\0.png\n")
    elif case == "long":
        open(lst, "wb").write(b"a.png\n" + b"x" * (MAX_LINE + 1) + b"\n")
    elif case == "image":
        from tests.images import textured
        textured(20, 20).save(lst, format="PNG")  # a PNG given as a list: NUL bytes
    with pytest.raises(UserInputError) as e:
        read_path_list(lst)
    msg = str(e.value)
    assert "\n" not in msg and "--files-from" in msg
    words = {"missing": "no such file", "folder": "is a directory", "nul": "line 2", "long": "line 2",
             "image": "NUL"}[case]
    assert words in msg


def _json(capsys, *argv):
    code, out, err = run_cli(capsys, "score", *argv, "--format", "json")
    return code, (json.loads(out) if out.strip() else None), err


def test_score_files_from_equals_paths(tmp_path, capsys, square_bundle):
    imgs = sample_images(tmp_path)
    broken = broken_inputs(tmp_path / "broken")
    lst = tmp_path / "list.txt"
    names = imgs[:3] + [broken["empty.jpg"][0], broken["missing.png"][0], broken["folder.jpg"][0]]
    lst.write_text("\n".join(names) + "\n" + imgs[0] + "\n")  # a repeat is scored once
    code, by_list, err = _json(capsys, "--files-from", lst, "-m", square_bundle)
    assert code == 1
    code2, by_args, _ = _json(capsys, *names, "-m", square_bundle)
    assert by_list == by_args and [r["image"] for r in by_list] == names
    assert "icrt: " + broken["missing.png"][0] + ": no such file" in err
    # PATHs and a list together: PATHs first, then the list, repeats dropped
    code, both, _ = _json(capsys, imgs[4], imgs[0], "--files-from", lst, "-m", square_bundle)
    assert [r["image"] for r in both] == [imgs[4], imgs[0]] + names[1:]


def test_score_shards_partition(tmp_path, capsys, square_bundle):
    imgs = sample_images(tmp_path)
    code, everything, _ = _json(capsys, *imgs, "-m", square_bundle)
    seen = []
    for i in range(3):
        code, part, err = _json(capsys, str(tmp_path), "--shard", f"{i}/3", "-m", square_bundle)
        assert code == 0, err
        assert part == [r for r in everything if shard_of(r["image"], 3) == i]  # input order kept
        seen += [r["image"] for r in part]
        again = _json(capsys, str(tmp_path), "--shard", f"{i}/3", "-m", square_bundle)[1]
        assert again == part  # stable across runs
    assert sorted(seen) == sorted(imgs)


def test_score_empty_shard_is_not_an_error(tmp_path, capsys, square_bundle):
    img = sample_images(tmp_path)[0]
    n = 50
    empty = next(i for i in range(n) if shard_of(img, n) != i)
    code, out, err = _json(capsys, img, "--shard", f"{empty}/{n}", "-m", square_bundle)
    assert code == 0 and out == []


@pytest.mark.parametrize("argv,words", [
    ([], "nothing to score"),
    (["--files-from", "/nonexistent/list.txt"], "no such file"),
])
def test_score_input_errors_are_one_line(capsys, square_bundle, argv, words):
    code, out, err = run_cli(capsys, "score", *argv, "-m", square_bundle)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("icrt: error:") and words in lines[0], err


@pytest.mark.parametrize("shard,words", [("2/2", "counted from 0"), ("x", "expected I/N"), ("1/0", "N must be"),
                                         ("-1/2", "I must be 0 or more"), ("-1/-2", "I must be 0 or more"),
                                         ("\u0660/\u0662", "ASCII digits")])
def test_score_bad_shard_is_a_usage_error(tmp_path, capsys, square_bundle, shard, words):
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "score", str(tmp_path), "--shard", shard, "-m", square_bundle)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_shard_argv_joins_a_negative_value():
    """N19: argparse would take -1/2 for an option ("expected one argument"); joined, parse_shard says why."""
    from icrt.runtime.scoring.inputs import shard_argv

    assert shard_argv(["score", "x", "--shard", "-1/2"]) == ["score", "x", "--shard=-1/2"]
    assert shard_argv(["score", "--shard", "0/2", "-o", "-"]) == ["score", "--shard", "0/2", "-o", "-"]
    assert shard_argv(["score", "--shard", "--recursive"]) == ["score", "--shard", "--recursive"]


# --- R11: lists read a line at a time, never whole -----------------------------------------------------------------


def _icrt(*argv, stdin=None, timeout=120):
    """`icrt ARGV` as its own process, its address space capped at 2 GB (a list read whole would hit it)."""
    import resource
    import subprocess
    import sys

    from tests.runtime.fixtures import ROOT

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    return subprocess.run([sys.executable, "-m", "icrt.runtime.cli", *map(str, argv)], stdin=stdin, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=cap, env={**os.environ, "PYTHONPATH": ROOT})


def _one_line(r, *words):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("icrt: error: "), r.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_dev_zero_as_a_list_is_refused_at_once(square_bundle):
    """`--files-from /dev/zero` was read whole (unbounded memory, then a MemoryError traceback): a device is no
    list of paths."""
    _one_line(_icrt("score", "--files-from", "/dev/zero", "-m", square_bundle),
              "--files-from /dev/zero", "is a character device, not a list of paths")


def test_zeros_through_a_pipe_stop_at_the_first_nul(square_bundle):
    """`cat /dev/zero | icrt score --files-from -`: the first line read (at most MAX_LINE + 2 bytes) holds a NUL."""
    import subprocess

    zeros = subprocess.Popen(["cat", "/dev/zero"], stdout=subprocess.PIPE)
    try:
        r = _icrt("score", "--files-from", "-", "-m", square_bundle, stdin=zeros.stdout)
    finally:
        zeros.kill()
        zeros.wait()
        zeros.stdout.close()
    _one_line(r, "--files-from standard input line 1: a NUL byte")


def _read_list_capped(list_arg: str, stdin=None, max_lines: int | None = None):
    """``read_path_list(list_arg)`` in a process of its own, its address space capped at 2 GB, so that a list read
    whole (the defect) fails there instead of filling this machine's memory; ``max_lines`` lowers MAX_LIST_LINES."""
    import resource
    import subprocess
    import sys

    from tests.runtime.fixtures import ROOT

    code = ("import sys\n"
            "import icrt.runtime.scoring.inputs as inputs\n"
            f"if {max_lines!r}: inputs.MAX_LIST_LINES = {max_lines!r}\n"
            "try:\n"
            f"    inputs.read_path_list({list_arg!r})\n"
            "except inputs.UserInputError as e:\n"
            "    print(e)\n")

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    return subprocess.run([sys.executable, "-c", code], stdin=stdin, capture_output=True, text=True, timeout=300,
                          preexec_fn=cap, env={**os.environ, "PYTHONPATH": ROOT})


def test_an_endless_line_stops_past_max_line(tmp_path):
    """A list whose first line never ends (a FIFO fed without a newline) stops after MAX_LINE + 2 bytes."""
    import subprocess

    fifo = tmp_path / "list"
    os.mkfifo(fifo)
    feeder = subprocess.Popen(["sh", "-c", f"yes x | tr -d '\\n' > {fifo}"])
    try:
        r = _read_list_capped(str(fifo))
    finally:
        feeder.kill()
        feeder.wait()
    assert r.returncode == 0 and f"line 1: more than {MAX_LINE} bytes" in r.stdout, (r.stdout, r.stderr[-2000:])


def test_an_endless_pipe_of_paths_stops_at_the_list_cap():
    """`yes x.png | icrt score --files-from -` would never end: the list stops at MAX_LIST_LINES lines (lowered to
    50,000 here, so that the test reads 50,000 lines, not 20 million), one line naming the cap."""
    import subprocess

    yes = subprocess.Popen(["yes", "x.png"], stdout=subprocess.PIPE)
    try:
        r = _read_list_capped("-", stdin=yes.stdout, max_lines=50_000)
    finally:
        yes.kill()
        yes.wait()
        yes.stdout.close()
    assert r.returncode == 0 and "--files-from standard input: longer than 50,000 lines" in r.stdout, r.stderr[-2000:]


def test_a_list_through_a_pipe_is_read(tmp_path, capsys, square_bundle):
    """A FIFO (a named pipe, `<(cmd)`) is a list like a file."""
    import threading

    img = sample_images(tmp_path)[0]
    fifo = tmp_path / "list"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(img + "\n"), daemon=True)
    writer.start()
    code, out, err = _json(capsys, "--files-from", fifo, "-m", square_bundle)
    writer.join(60)
    assert code == 0 and [r["image"] for r in out] == [img], err
