"""Where `icrt score` writes, and what: CSV cells, -o destinations, checks before scoring, fallbacks, odd file
names. (`python -m export` replacing a bundle only when the new one is complete: tests/export/test_export.py.)"""
import contextlib
import csv
import errno
import io
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from tests.images import textured
from tests.runtime.fixtures import ROOT
from tests.runtime.fixtures import run_cli as run


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "ok.png"
    textured(50, 40, seed=1).save(path)
    return path


def icrt(*argv, cwd=None, env=None, timeout=300):
    """The real process, bytes out (names that are not UTF-8 must come back as they were)."""
    env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([sys.executable, "-m", "icrt.runtime.cli", *[os.fsencode(a) for a in argv]], capture_output=True,
                          cwd=cwd, env=env, timeout=timeout)


def one_error_line(err: str, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("icrt: error: ") and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), lines[0]


def mknod_or_skip(path, major, minor):
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here: {e}")


# --- 5: CSV injection ------------------------------------------------------------------------------------------


def test_csv_cells_a_spreadsheet_would_run_get_a_quote(capsys, square_bundle, tmp_path, monkeypatch):
    names = ["=1+2.png", "+a.png", "-b.png", "@c.png", "\td.png", "ok=.png"]
    for i, n in enumerate(names):
        textured(40, 40, seed=i).save(tmp_path / n)
    (tmp_path / "=bad.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "score", "-m", square_bundle, "--format", "csv", "--", *names, "=bad.png")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1
    assert [r["image"] for r in rows] == ["'=1+2.png", "'+a.png", "'-b.png", "'@c.png", "'\td.png", "ok=.png", "'=bad.png"]
    assert all(0 <= float(r["score"]) <= 1 for r in rows[:-1]) and rows[-1]["error"] == "empty file (0 bytes)"
    code, out, _ = run(capsys, "score", "=1+2.png", "-m", square_bundle, "--format", "json")  # not a spreadsheet
    assert json.loads(out)[0]["image"] == "=1+2.png"


# --- 6: what -o writes to ----------------------------------------------------------------------------------------


def test_output_through_a_symlink_keeps_the_link_and_the_mode(capsys, square_bundle, image, tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    os.chmod(real, 0o600)
    link = tmp_path / "link.csv"
    link.symlink_to("real.csv")
    assert run(capsys, "score", image, "-m", square_bundle, "--format", "csv", "-o", link)[0] == 0
    assert link.is_symlink() and os.readlink(link) == "real.csv"
    assert real.read_text().startswith("image,score,") and stat.S_IMODE(real.stat().st_mode) == 0o600
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to("made/by/icrt.csv")  # written where it points, the link stays
    assert run(capsys, "score", image, "-m", square_bundle, "--format", "csv", "-o", dangling)[0] == 0
    assert dangling.is_symlink() and (tmp_path / "made/by/icrt.csv").read_text().startswith("image,score,")


def test_output_replacing_a_file_keeps_its_mode_and_owner(capsys, square_bundle, image, tmp_path):
    out = tmp_path / "private.json"
    out.write_text("[]\n")
    os.chmod(out, 0o600)
    owner = (12345, 12345) if os.geteuid() == 0 else (os.getuid(), os.getgid())  # root gives the file away
    os.chown(out, *owner)
    assert run(capsys, "score", image, "-m", square_bundle, "--format", "json", "-o", out)[0] == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and json.loads(out.read_text())[0]["score"] is not None
    assert (out.stat().st_uid, out.stat().st_gid) == owner


def test_output_to_a_fifo_writes_through_it(capsys, square_bundle, image, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    code, _, err = run(capsys, "score", image, "-m", square_bundle, "--format", "jsonl", "-o", fifo)
    reader.join(60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a regular file"
    assert code == 0 and err == "" and json.loads(got[0])["image"] == str(image)


def test_output_to_a_character_device_writes_through_it(square_bundle, image, tmp_path):
    null = tmp_path / "null"
    mknod_or_skip(null, 1, 3)  # what /dev/null is, made here so that a bad run cannot break the real one
    r = icrt("score", image, "-m", square_bundle, "-o", null)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode) and sorted(os.listdir(tmp_path)) == ["null", "ok.png"]


def test_output_symlink_loop_is_a_usage_error(capsys, square_bundle, image, tmp_path):
    (tmp_path / "a.csv").symlink_to("b.csv")
    (tmp_path / "b.csv").symlink_to("a.csv")
    code, out, err = run(capsys, "score", image, "-m", square_bundle, "--format", "csv", "-o", tmp_path / "a.csv")
    assert code == 2 and out == ""
    one_error_line(err, "a.csv", "symlink loop")


# --- 7: destinations checked before scoring; a late write error keeps the scores -----------------------------------


@pytest.fixture
def no_scoring(monkeypatch):
    import icrt.runtime.scoring.scorer as scorer

    def refuse(*a, **k):
        raise AssertionError("scoring started before the destination was checked")
    monkeypatch.setattr(scorer.Scorer, "load", classmethod(refuse))


def test_bad_destinations_fail_before_scoring(capsys, square_bundle, image, tmp_path, no_scoring):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    cases = [
        (["-o", tmp_path / "folder"], ["-o", "is a directory"]),
        (["-o", tmp_path / "file" / "scores.csv"], ["-o", "is not a directory"]),
        (["-o", tmp_path / "file" / "missing" / "scores.csv"], ["-o", "is not a directory"]),
        (["--heatmap", tmp_path / "file"], ["--heatmap", "not a directory"]),
        (["--heatmap", tmp_path / "file" / "maps"], ["--heatmap", "is not a directory"]),
    ]
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    if not os.access(ro, os.W_OK):  # root may write anywhere: then this case cannot happen
        cases += [(["-o", ro / "scores.csv"], ["-o", "cannot create files in"]),
                  (["--heatmap", ro / "maps"], ["--heatmap", "cannot create files in"])]
    for extra, words in cases:
        code, out, err = run(capsys, "score", image, "-m", square_bundle, "--format", "csv", *extra)
        assert code == 2 and out == "", (extra, err)
        one_error_line(err, *words)
    os.chmod(ro, 0o755)


def test_a_failed_write_at_the_end_leaves_the_scores_in_a_fallback_file(capsys, square_bundle, image, tmp_path,
                                                                        monkeypatch):
    import icrt.runtime.base.files as files

    out = tmp_path / "scores.csv"
    out.write_text("old\n")

    def disk_full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "replace", disk_full)
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(capsys, "score", image, "-m", square_bundle, "--format", "csv", "-o", out)
    fallback = f"icrt-scores-{os.getpid()}.csv"
    assert code == 2 and stdout == "" and out.read_text() == "old\n"
    one_error_line(err, "cannot write -o", "No space left on device", fallback)
    rows = list(csv.DictReader(open(tmp_path / fallback)))
    assert len(rows) == 1 and 0 <= float(rows[0]["score"]) <= 1
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []


def test_a_full_device_at_the_end_is_one_line_and_a_fallback_file(square_bundle, image, tmp_path):
    full = tmp_path / "full"
    mknod_or_skip(full, 1, 7)  # /dev/full: every write fails with ENOSPC
    r = icrt("score", image, "-m", square_bundle, "--format", "json", "-o", full, cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err and stat.S_ISCHR(os.lstat(full).st_mode)
    [saved] = [p for p in os.listdir(tmp_path) if p.startswith("icrt-scores-")]
    assert err.strip().splitlines()[0].endswith(f"saved in ./{saved}")
    assert json.loads((tmp_path / saved).read_text())[0]["image"] == str(image)


def test_a_heatmap_that_cannot_be_written_ends_heatmaps_not_scoring(capsys, patches_bundle, tmp_path, monkeypatch):
    import icrt.runtime.scoring.heatmap as heatmap

    patches = patches_bundle
    for i in range(3):
        textured(70, 50, seed=i).save(tmp_path / f"i{i}.png")
    real, calls = heatmap.write_owned, []

    def second_fails(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(path, data)
    monkeypatch.setattr(heatmap, "write_owned", second_fails)
    code, out, err = run(capsys, "score", *[tmp_path / f"i{i}.png" for i in range(3)], "-m", patches,
                         "--heatmap", tmp_path / "maps", "--format", "json")
    recs = json.loads(out)
    assert code == 2 and len(recs) == 3 and all(0 <= r["score"] <= 1 for r in recs)
    assert "heatmap" in recs[0] and "heatmap" not in recs[1] and "heatmap" not in recs[2]
    one_error_line(err, "cannot write a heatmap", "i1.heatmap.png", "No space left on device")
    assert os.listdir(tmp_path / "maps") == ["i0.heatmap.png"]


# --- 8: file names that are not UTF-8, or hold newlines -----------------------------------------------------------


@pytest.fixture
def odd_names(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    raw = os.fsencode(str(d)) + b"/\xff\xfe.png"
    textured(50, 40, seed=2).save(os.fsdecode(raw))
    textured(50, 40, seed=3).save(d / "ok.png")
    return d, raw


def test_undecodable_names_round_trip_in_every_format(square_bundle, odd_names, tmp_path):
    d, raw = odd_names
    r = icrt("score", d, "-m", square_bundle, "--format", "json")
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)  # ASCII: the name's lone surrogates are \udcXX escapes
    assert b"\\udcff\\udcfe" in r.stdout and [os.fsencode(x["image"]) for x in recs] == [os.fsencode(str(d / "ok.png")), raw]
    r = icrt("score", d, "-m", square_bundle, "--format", "jsonl")
    assert os.fsencode(json.loads(r.stdout.splitlines()[1])["image"]) == raw
    out = tmp_path / "scores.csv"
    r = icrt("score", d, "-m", square_bundle, "--format", "csv", "-o", out)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8", "surrogateescape"))))
    assert os.fsencode(rows[1]["image"]) == raw and float(rows[1]["score"]) > 0
    r = icrt("score", d, "-m", square_bundle, env={"PYTHONIOENCODING": "utf-8:strict"})  # table, strict stdout
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[2].startswith(raw + b"  ") and len(r.stdout.splitlines()) == 3


def test_undecodable_name_with_heatmaps(patches_bundle, odd_names, tmp_path):
    d, raw = odd_names
    r = icrt("score", d, "-m", patches_bundle, "--heatmap", tmp_path / "maps",
             "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(os.fsencode(str(tmp_path / "maps")))) == [b"ok.heatmap.png", b"\xff\xfe.heatmap.png"]


def test_newlines_in_names_keep_one_line_per_error(capsys, square_bundle, tmp_path):
    bad = tmp_path / "two\nlines.png"
    bad.write_bytes(b"")
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xff\nbad.png")
    open(odd, "wb").close()
    good = tmp_path / "also\nfine.png"
    textured(40, 40).save(good)
    code, out, err = run(capsys, "score", bad, odd, good, "-m", square_bundle, "--format", "json")
    assert code == 1 and [r["image"] for r in json.loads(out)] == [str(bad), odd, str(good)]
    assert err.splitlines() == [f"icrt: {tmp_path}/two\\nlines.png: empty file (0 bytes)",
                                f"icrt: {tmp_path}/\\xff\\nbad.png: empty file (0 bytes)",
                                "icrt: 2 of 3 file(s) could not be scored"]
    code, out, _ = run(capsys, "score", bad, good, "-m", square_bundle)  # the table keeps one row per image
    assert len(out.splitlines()) == 3 and "two\\nlines.png" in out


# --- N4: paths that name an open descriptor are written as they are ---------------------------------------------


@pytest.mark.parametrize("dest", ["/dev/stdout", "/proc/self/fd/1", "/dev/fd/1", "link"])
def test_dev_stdout_appends_to_a_redirected_file(square_bundle, image, tmp_path, dest):
    """`icrt score -o /dev/stdout >> log`: the earlier lines of log stay (the descriptor is written as it is)."""
    log = tmp_path / "log.txt"
    log.write_text("PREVIOUS LINE\n")
    if dest == "link":  # a link the user made to /dev/stdout is followed to the descriptor too
        (tmp_path / "link").symlink_to("/dev/stdout")
        dest = str(tmp_path / "link")
    with open(log, "ab") as out:
        p = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", str(image), "-m", square_bundle, "--format",
                            "jsonl", "-o", dest], stdout=out, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT},
                           timeout=300)
    assert p.returncode == 0, p.stderr
    first, second = log.read_text().splitlines()
    assert first == "PREVIOUS LINE" and json.loads(second)["image"] == str(image)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_dev_stdout_and_dev_fd_work_into_a_pipe(square_bundle, image):
    r = icrt("score", image, "-m", square_bundle, "--format", "csv", "-o", "/dev/stdout")
    assert r.returncode == 0 and r.stdout.decode().splitlines()[1].startswith(str(image) + ","), r.stderr
    read, write = os.pipe()
    try:
        p = subprocess.Popen([sys.executable, "-m", "icrt.runtime.cli", "score", str(image), "-m", square_bundle,
                              "--format", "jsonl", "-o", f"/dev/fd/{write}"], pass_fds=(write,),
                             env={**os.environ, "PYTHONPATH": ROOT}, stderr=subprocess.PIPE)
        os.close(write)
        write = None
        with os.fdopen(read, "rb") as f:
            data = f.read()
        read = None
        assert p.wait(300) == 0 and json.loads(data)["image"] == str(image)
        p.stderr.close()
    finally:
        for fd in (read, write):
            if fd is not None:
                os.close(fd)


@pytest.mark.parametrize("dest, words", [("/dev/fd/57", "file descriptor 57 is not open"),
                                         ("/dev/stdin", "not open for writing")])
def test_a_descriptor_that_cannot_be_written_is_refused_before_scoring(square_bundle, image, dest, words):
    with open(os.devnull, "rb") as stdin:
        p = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", str(image), "-m", square_bundle, "-o", dest],
                           stdin=stdin, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT},
                           timeout=300)
    assert p.returncode == 2 and p.stdout == ""
    one_error_line(p.stderr, f"cannot write -o {dest}", words)


def test_fd_target_names_descriptors_only():
    from icrt.runtime.base.files import fd_target

    assert fd_target("/dev/stdout").fd == 1 and fd_target("/dev/stderr").fd == 2 and fd_target("/dev/fd/7").fd == 7
    assert fd_target(f"/proc/{os.getpid()}/fd/4").fd == 4 and fd_target("/proc/self/fd/0").fd == 0
    other = fd_target("/proc/1/fd/1")
    assert other.fd is None and other.path == "/proc/1/fd/1"  # another process's: opened for appending
    for plain in ("/dev/null", "/tmp/x.json", "/proc/self/status", "/dev/fd", "/dev/fd/x", "out.csv"):
        assert fd_target(plain) is None, plain


# --- N5: a model that fails at run time --------------------------------------------------------------------------


def test_a_model_failing_at_run_time_still_writes_o(tmp_path):
    """The images of the failed batch get error records, the others are scored, -o is written, no traceback, and
    the exit code is 2 (a model error)."""
    from PIL import Image

    from tests.runtime.fixtures import make_bundle

    bundle = make_bundle(tmp_path / "fails", "fails-bright")
    for name, grey in (("dark.png", 30), ("white.png", 255), ("dark2.png", 60)):
        Image.new("RGB", (40, 40), (grey,) * 3).save(tmp_path / name)
    r = icrt("score", "dark.png", "white.png", "dark2.png", "-m", bundle, "--batch-size", "1", "--format", "json",
             "-o", "r.json", "--backend", "onnxruntime", "-q", cwd=tmp_path)  # OpenVINO's: backends/test_openvino.py
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err and "\x1b[" not in err  # nor onnxruntime's red log
    recs = json.loads((tmp_path / "r.json").read_text())
    assert [("score" in rec) for rec in recs] == [True, False, True]
    assert recs[1]["error"].startswith("the model failed on this image's batch (onnxruntime Fail: ")
    lines = err.strip().splitlines()
    assert lines[0].startswith("icrt: error: the model failed on a batch of 1 input(s), 1 image(s): ")
    assert "Reshape" in lines[0] and lines[-1].startswith("icrt: error: the model failed while running 1 batch(es)")
    assert len(lines) == 4  # the batch, the image, the count, the end


# --- N16: SIGTERM --------------------------------------------------------------------------------------------------


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path, capsys):
    """SIGTERM becomes an exception in the main thread (runtime.base.errors.run_command), so atomic writers remove their
    temporary file, as with Ctrl+C; exit code 143."""
    import signal

    from icrt.runtime.base.errors import EXIT_TERMINATED, run_command
    from icrt.runtime.base.files import atomic_path

    def write_heatmap_and_get_killed():
        with atomic_path(str(tmp_path / "a.heatmap.png")) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half a png")
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler raises at the next bytecode
                pass
        raise AssertionError("not terminated")

    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a fresh `icrt` (a Ray test may have set its own)
    try:
        assert run_command("icrt", write_heatmap_and_get_killed) == EXIT_TERMINATED
        assert os.listdir(tmp_path) == [] and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)
    assert capsys.readouterr().err == "icrt: terminated (SIGTERM)\n"


# --- issue 26 / R1: links and FIFOs that another user planted where icrt writes --------------------------------

OTHER = 65534  # nobody: the other user of these tests (making a file of another user needs root)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making a link or FIFO of another user needs root")
VICTIM = "VICTIM CONTENT\n"


@pytest.fixture
def shared(tmp_path):
    """A folder every user may write to, as /tmp is (sticky, world-writable)."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


@pytest.fixture
def victim(tmp_path):
    v = tmp_path / "victim.txt"
    v.write_text(VICTIM)
    return v


def plant_link(path, target, uid=OTHER):
    """A symbolic link at ``path`` owned by ``uid`` (by default another user)."""
    os.symlink(target, path)
    os.lchown(path, uid, uid)
    return path


def plant_fifo(path, uid=OTHER):
    os.mkfifo(path)
    os.chown(path, uid, uid)
    return path


@pytest.fixture
def scoring_refused(monkeypatch):
    """Scoring must not start: the destination is refused before the bundle is opened."""
    import icrt.runtime.scoring.scorer as scorer

    def refuse(cls, *a, **k):
        raise AssertionError("scoring started before the destination was checked")
    monkeypatch.setattr(scorer.Scorer, "open", classmethod(refuse))


def test_the_kernels_protected_symlinks_rule():
    """A link (FIFO) in a folder that is sticky or writable by group or others is followed only when it belongs to
    the user or to the folder's owner; in any other folder it is the user's choice."""
    from types import SimpleNamespace

    from icrt.runtime.base.files import kernel_refuses

    def folder(mode, uid=0):
        return SimpleNamespace(st_mode=stat.S_IFDIR | mode, st_uid=uid)
    me, other = 1000, 1001
    for mode in (0o1777, 0o777, 0o775, 0o1770, 0o1755):
        assert kernel_refuses(other, folder(mode), me), oct(mode)  # /tmp, a team folder
        assert not kernel_refuses(me, folder(mode), me)  # my own link
        assert not kernel_refuses(other, folder(mode, uid=other), me)  # the folder's owner's link (root's in /tmp)
    for mode in (0o755, 0o700, 0o555):
        assert not kernel_refuses(other, folder(mode), me), oct(mode)  # nobody else could have put it there
    assert kernel_refuses(other, folder(0o1777), 0)  # root too: the case of the red-team finding


@needs_root
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_o_refuses_a_link_another_user_planted_in_a_shared_folder(capsys, square_bundle, image, shared, victim, fmt,
                                                                  scoring_refused):
    """R1: `-o /tmp/scores.json`, where someone else made scores.json a link to a file of the user: refused before
    scoring, with one line (exit 2); the file it points to is unchanged. Also a link on the way (a folder)."""
    plant_link(shared / "scores.json", victim)
    plant_link(shared / "dir", victim.parent)
    for dest in (shared / "scores.json", shared / "dir" / "victim.txt"):
        code, out, err = run(capsys, "score", image, "-m", square_bundle, "--format", fmt, "-o", dest)
        assert code == 2 and out == ""
        one_error_line(err, f"cannot write -o {dest}", "of another user (uid 65534)", "protected_symlinks")
    assert victim.read_text() == VICTIM and sorted(os.listdir(victim.parent)) == ["ok.png", "shared", "victim.txt"]


@needs_root
def test_o_refuses_a_fifo_another_user_planted_in_a_shared_folder_without_blocking(square_bundle, image, shared):
    plant_fifo(shared / "scores.jsonl")
    r = icrt("score", image, "-m", square_bundle, "--format", "jsonl", "-o", shared / "scores.jsonl", timeout=120)
    assert r.returncode == 2 and r.stdout == b""
    one_error_line(r.stderr.decode(), "scores.jsonl is a FIFO of another user", "protected_fifos")


@needs_root
def test_o_follows_a_link_of_the_user_or_one_in_a_folder_only_they_can_write(capsys, square_bundle, image, shared,
                                                                             victim, tmp_path):
    """The user's own link, even in a shared folder, and any link in a folder nobody else can write, stay the user's
    choice: written through, the link kept."""
    plant_link(shared / "mine.json", victim, uid=os.geteuid())
    private = tmp_path / "private"
    private.mkdir(mode=0o755)
    plant_link(private / "theirs.json", tmp_path / "other.json")  # another user's, but only I could have put it there
    for dest, written in ((shared / "mine.json", victim), (private / "theirs.json", tmp_path / "other.json")):
        assert run(capsys, "score", image, "-m", square_bundle, "--format", "json", "-o", dest)[0] == 0
        assert dest.is_symlink() and json.loads(written.read_text())[0]["image"] == str(image)


@needs_root
def test_a_heatmap_folder_that_another_user_linked_elsewhere_is_refused(capsys, square_bundle, image, shared,
                                                                       tmp_path, scoring_refused):
    """`--heatmap /tmp/maps`, where someone else made maps a link to a folder of the user's: refused (exit 2)."""
    (tmp_path / "mine").mkdir()
    plant_link(shared / "maps", tmp_path / "mine")
    code, out, err = run(capsys, "score", image, "-m", square_bundle, "--heatmap", shared / "maps")
    assert code == 2 and out == "" and os.listdir(tmp_path / "mine") == []
    one_error_line(err, f"--heatmap {shared}/maps", "of another user (uid 65534)", "protected_symlinks")


def test_heatmaps_refuse_a_link_or_fifo_planted_in_the_folder_before_scoring(square_bundle, image, tmp_path, victim):
    """R1: `--heatmap maps/`, where maps/ok.heatmap.png is a link (or a FIFO): icrt never writes its own files through
    a link, whoever made it; one line before scoring, exit 2, no hang, the victim unchanged."""
    maps = tmp_path / "maps"
    maps.mkdir()
    os.symlink(victim, maps / "ok.heatmap.png")
    r = icrt("score", image, "-m", square_bundle, "--heatmap", maps, "--format", "json", timeout=120)
    assert r.returncode == 2 and r.stdout == b""
    one_error_line(r.stderr.decode(), f"--heatmap {maps}", "ok.heatmap.png is a symbolic link")
    assert victim.read_text() == VICTIM
    os.remove(maps / "ok.heatmap.png")
    os.mkfifo(maps / "ok.heatmap.png")
    r = icrt("score", image, "-m", square_bundle, "--heatmap", maps, "--format", "json", timeout=120)
    assert r.returncode == 2
    one_error_line(r.stderr.decode(), "ok.heatmap.png is a FIFO, not a regular file")
    os.remove(maps / "ok.heatmap.png")
    os.symlink(victim, maps / "ok-1.heatmap.png")  # the name a second ok.png gets: every name a run may use is checked
    (tmp_path / "sub").mkdir()
    textured(30, 30).save(tmp_path / "sub" / "ok.png")
    r = icrt("score", image, tmp_path / "sub" / "ok.png", "-m", square_bundle, "--heatmap", maps, timeout=120)
    assert r.returncode == 2
    one_error_line(r.stderr.decode(), "ok-1.heatmap.png is a symbolic link")
    assert victim.read_text() == VICTIM


def test_a_heatmap_link_planted_during_the_run_is_not_written_through(patches_bundle, tmp_path, victim):
    """A link that appears after the check: the writer itself refuses it (O_NOFOLLOW-like: the rename replaces a
    name); heatmaps end, scoring goes on."""
    from icrt.runtime.scoring.heatmap import HeatmapWriter
    from icrt.runtime.scoring.scorer import Scorer

    textured(70, 50, seed=1).save(tmp_path / "a.png")
    maps = tmp_path / "maps"
    writer = HeatmapWriter(str(maps), (0.0, 1.0))
    scorer = Scorer.load(patches_bundle, backend="onnxruntime")
    [rec] = scorer.iter_score([str(tmp_path / "a.png")], maps=writer.wanted)
    maps.mkdir()
    os.symlink(victim, maps / "a.heatmap.png")
    problem = writer.draw(rec)
    assert "a.heatmap.png: is a symbolic link" in problem and "heatmap" not in rec and not writer.active
    assert victim.read_text() == VICTIM and 0 <= rec["score"] <= 1


# --- issue 26: jsonl / csv written as rows come; an interrupted run keeps them in FILE.partial ------------------


def five_images(folder):
    paths = []
    for i in range(5):
        textured(40 + 5 * i, 40, seed=i, level=i / 5).save(folder / f"im{i}.png")
        paths.append(folder / f"im{i}.png")
    return paths


@contextlib.contextmanager
def stalled(n, *argv, cwd, **popen):
    """`icrt ARGV` whose model stalls after n batches (tests/runtime/cli/stalled_score.py); killed on the way out
    whatever happened (a failed test must not leave it waiting for an hour)."""
    p = subprocess.Popen([sys.executable, "-m", "tests.runtime.cli.stalled_score", str(n), *map(str, argv)], cwd=cwd,
                         env={**os.environ, "PYTHONPATH": ROOT}, stderr=subprocess.PIPE, **popen)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()


def wait_for(condition, what, process, timeout=180):
    """Poll ``condition`` until it holds (the process must still be running), for at most ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stop(process, sig):
    """Send ``sig``; (exit code, stderr) once the process has ended (the caller's ``stalled`` kills it otherwise)."""
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    return process.returncode, err.decode()


@pytest.mark.parametrize("fmt, sig, code", [("jsonl", "SIGINT", 130), ("csv", "SIGTERM", 143), ("jsonl", "SIGKILL", -9)])
def test_an_interrupted_run_keeps_its_rows_in_a_partial_file_and_the_old_file(square_bundle, tmp_path, fmt, sig, code):
    """Ctrl+C, SIGTERM or a kill after 3 of 5 images: FILE.partial holds the 3 rows, each whole; FILE is as it was;
    the error line names the partial file (none for SIGKILL: nothing runs then)."""
    import signal

    images = five_images(tmp_path)
    out, partial = tmp_path / f"scores.{fmt}", tmp_path / f"scores.{fmt}.partial"
    out.write_text("OLD\n")
    lines = 3 + (fmt == "csv")  # the header
    with stalled(3, "score", *images, "-m", square_bundle, "--backend", "onnxruntime", "--batch-size", "1", "--format",
                 fmt, "-o", out, cwd=tmp_path) as p:
        wait_for(lambda: partial.exists() and partial.read_bytes().count(b"\n") >= lines, "3 rows in the partial file", p)
        returncode, err = stop(p, getattr(signal, sig))
    assert returncode == code and "Traceback" not in err, err
    assert out.read_text() == "OLD\n"
    text = partial.read_text()
    rows = ([json.loads(line) for line in text.splitlines()] if fmt == "jsonl" else
            list(csv.DictReader(io.StringIO(text))))
    assert [r["image"] for r in rows] == [str(i) for i in images[:3]] and all(0 <= float(r["score"]) <= 1 for r in rows)
    if sig != "SIGKILL":
        assert (f"icrt: error: stopped after 3 of 5 image(s): their rows are in {partial} (-o {out} was left as it "
                "was)") in err.splitlines(), err
    assert sorted(os.listdir(tmp_path)) == sorted([*(i.name for i in images), out.name, partial.name])


def test_jsonl_on_stdout_comes_a_row_at_a_time(square_bundle, tmp_path):
    """The rows of a run reach stdout as they are scored, not at the end."""
    import signal
    import threading

    images = five_images(tmp_path)
    got = []
    with stalled(2, "score", *images, "-m", square_bundle, "--backend", "onnxruntime", "--batch-size", "1", "--format",
                 "jsonl", cwd=tmp_path, stdout=subprocess.PIPE) as p:
        reader = threading.Thread(target=lambda: got.extend([p.stdout.readline(), p.stdout.readline()]), daemon=True)
        reader.start()
        reader.join(180)
        still_running = p.poll() is None
        returncode, _ = stop(p, signal.SIGINT)
    assert still_running and [json.loads(line)["image"] for line in got] == [str(i) for i in images[:2]]
    assert returncode == 130


def test_an_error_mid_run_names_the_partial_file(capsys, square_bundle, tmp_path, monkeypatch):
    """Any stop before the end (here a server error raised after 2 records) leaves the partial file and says so."""
    import icrt.runtime.scoring.inputs as inputs
    from icrt.runtime.base.errors import UserInputError

    images = five_images(tmp_path)
    real = inputs.in_input_order

    def two_then_fail(*a, **k):
        it = real(*a, **k)
        yield next(it)
        yield next(it)
        raise UserInputError("the server went away")
    monkeypatch.setattr(inputs, "in_input_order", two_then_fail)
    out = tmp_path / "scores.jsonl"
    code, stdout, err = run(capsys, "score", *images, "-m", square_bundle, "--format", "jsonl", "-o", out)
    partial = tmp_path / "scores.jsonl.partial"
    assert code == 2 and not out.exists() and len(partial.read_text().splitlines()) == 2
    assert err.splitlines() == [f"icrt: error: stopped after 2 of 5 image(s): their rows are in {partial} (-o {out} "
                                "was left as it was)", "icrt: error: the server went away"]


def test_a_finished_run_leaves_no_partial_file_and_replaces_an_old_one(capsys, square_bundle, tmp_path):
    images = five_images(tmp_path)
    out, partial = tmp_path / "scores.csv", tmp_path / "scores.csv.partial"
    partial.write_text("rows of an earlier interrupted run\n")
    code, stdout, err = run(capsys, "score", *images, "-m", square_bundle, "--format", "csv", "-o", out)
    assert code == 0 and stdout == "" and err == "" and not partial.exists()
    assert [r["image"] for r in csv.DictReader(open(out))] == [str(i) for i in images]
    code, stdout, _ = run(capsys, "score", *images, "-m", square_bundle, "--format", "csv")
    assert stdout == out.read_text()  # the same bytes as on stdout


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_link_or_fifo_where_the_partial_file_goes_is_refused_before_scoring(capsys, square_bundle, image, tmp_path,
                                                                              victim, kind, scoring_refused):
    partial = tmp_path / "scores.jsonl.partial"
    os.symlink(victim, partial) if kind == "link" else os.mkfifo(partial)
    code, out, err = run(capsys, "score", image, "-m", square_bundle, "--format", "jsonl", "-o", tmp_path / "scores.jsonl")
    assert code == 2 and out == ""
    one_error_line(err, f"{partial} (where its rows go while they are scored)", "symbolic link" if kind == "link"
                   else "FIFO")
    assert victim.read_text() == VICTIM


def test_a_run_stopped_before_its_first_row_leaves_no_partial_file(square_bundle, tmp_path):
    """A CSV header alone is no rows: the partial file goes, FILE stays, and no line claims rows were kept."""
    import signal

    images = five_images(tmp_path)
    out, partial = tmp_path / "scores.csv", tmp_path / "scores.csv.partial"
    out.write_text("OLD\n")
    with stalled(0, "score", *images, "-m", square_bundle, "--backend", "onnxruntime", "--batch-size", "1", "--format",
                 "csv", "-o", out, cwd=tmp_path) as p:
        wait_for(lambda: partial.exists() and partial.read_bytes().endswith(b"\n"), "the partial file's header", p)
        returncode, err = stop(p, signal.SIGINT)
    assert returncode == 130 and err.strip() == "icrt: interrupted", err
    assert out.read_text() == "OLD\n" and not partial.exists()
