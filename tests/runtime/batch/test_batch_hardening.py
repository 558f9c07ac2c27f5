"""`icrt batch` output folders as an attacker or a careless user leaves them (hardening round 2: N1-N3, N5, N8, N14,
N15): icrt's own files there are never written through a link, nor anything but regular files; a foreign folder is
refused and keeps its files; --resume refuses another model and tampered parts; a model that fails at run time gives
error rows; summary.json stays small. Every case is one `icrt: error:` line, never a traceback or a hang (the
subprocesses are bounded by timeouts). Torch-free; needs pyarrow."""
from __future__ import annotations

import glob
import json
import os
import shutil

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

import icrt.runtime.base.files as files  # noqa: E402
from tests.images import textured  # noqa: E402
from tests.runtime.batch.helpers import icrt, make_inputs, read_rows, write_list  # noqa: E402
from tests.runtime.fixtures import make_bundle, run_cli  # noqa: E402

VICTIM = "VICTIM\n"


@pytest.fixture
def inputs(tmp_path):
    return make_inputs(tmp_path / "in", 6, broken=False, odd=False)


def one_error_line(err: str, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("icrt: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, err)


def victim(tmp_path):
    v = tmp_path / "victim.txt"
    v.write_text(VICTIM)
    return v


# --- N1: never through a link ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [".lock", "summary.json", "run.json", "_SUCCESS", "part-000000.parquet"])
def test_a_link_in_the_out_folder_is_never_written_through(tmp_path, capsys, square_bundle, inputs, name):
    v = victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(v)
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle)
    assert code == 2
    one_error_line(err, str(out / name), "symbolic link")
    assert v.read_text() == VICTIM and os.path.islink(out / name)


def test_a_link_in_a_resumed_folder_is_refused_before_scoring(tmp_path, capsys, square_bundle, inputs):
    v = victim(tmp_path)
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *inputs[:3], "--out", out, "-m", square_bundle)[0] == 0
    for name in ("summary.json", "_SUCCESS", "run.json"):
        os.replace(out / name, tmp_path / name)
        (out / name).symlink_to(v)
        code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle, "--resume")
        assert code == 2
        one_error_line(err, str(out / name), "symbolic link")
        assert v.read_text() == VICTIM and len(read_rows(out)) == 3
        os.remove(out / name)
        os.replace(tmp_path / name, out / name)
    assert run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle, "--resume")[0] == 0
    assert len(read_rows(out)) == 6 and v.read_text() == VICTIM


def test_a_hard_link_lock_is_refused(tmp_path, capsys, square_bundle, inputs):
    v = victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    os.link(v, out / ".lock")
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle)
    assert code == 2
    one_error_line(err, ".lock", "hard links")
    assert v.read_text() == VICTIM


def test_owned_writes_never_follow_a_link_made_after_the_check(tmp_path):
    """The writer itself: a link put in place of an owned file is refused; the rename of the finished temporary
    file replaces a name, never a link's target; the temporary file is made with O_EXCL | O_NOFOLLOW."""
    v = victim(tmp_path)
    (tmp_path / "summary.json").symlink_to(v)
    with pytest.raises(OSError, match="symbolic link"):
        files.write_owned(str(tmp_path / "summary.json"), b"{}")
    with pytest.raises(OSError, match="symbolic link"):
        files.open_owned(str(tmp_path / "summary.json"), write=True)
    with pytest.raises(OSError, match="symbolic link"):
        files.read_owned(str(tmp_path / "summary.json"), 100)
    assert v.read_text() == VICTIM
    files.write_owned(str(tmp_path / "new.json"), b"{}")
    assert (tmp_path / "new.json").read_bytes() == b"{}" and not glob.glob(str(tmp_path / ".tmp-*"))


# --- N2: a foreign folder ----------------------------------------------------------------------------------------


def test_a_foreign_folder_is_refused_and_keeps_its_files(tmp_path, capsys, square_bundle, inputs):
    f = tmp_path / "f"
    f.mkdir()
    (f / "summary.json").write_text("notes")
    (f / ".tmp-important").write_text("keep")
    (f / "_SUCCESS").write_text("mine")
    before = {p: p.read_bytes() for p in f.iterdir()}
    for extra in ([], ["--resume"]):
        code, _, err = run_cli(capsys, "batch", *inputs, "--out", f, "-m", square_bundle, *extra)
        assert code == 2
        one_error_line(err, "not an icrt batch folder", "choose a new or empty folder")
        assert {p: p.read_bytes() for p in f.iterdir()} == before


def test_an_empty_folder_or_one_with_only_a_lock_is_taken(tmp_path, capsys, square_bundle, inputs):
    for name, lock in (("empty", False), ("locked", True)):
        out = tmp_path / name
        out.mkdir()
        if lock:
            (out / ".lock").write_text("pid 1 on elsewhere\n")
        assert run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle)[0] == 0
        assert len(read_rows(out)) == 6


def test_a_run_file_that_is_not_icrts_is_refused(tmp_path, capsys, square_bundle, inputs):
    out = tmp_path / "out"
    out.mkdir()
    for text in ("{not json", '["a list"]', '{"format": "something else"}', "[" * 100_000 + "]" * 100_000):
        (out / "run.json").write_text(text)
        code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle)
        assert code == 2
        one_error_line(err, str(out / "run.json"), "icrt batch folder")
        assert (out / "run.json").read_text() == text


# --- N3: --resume with another model -------------------------------------------------------------------------


def test_resume_refuses_another_model_with_the_same_name(tmp_path, capsys, square_bundle, inputs):
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *inputs[:3], "--out", out, "-m", square_bundle, "--part-rows", 1)[0] == 0
    run = json.loads((out / "run.json").read_text())
    assert len(run["model"]["files"]["onnxruntime"]["sha256"]) == 64 and run["model"]["preprocessing_sha256"]
    retrained = tmp_path / "retrained"  # same manifest (name, precision), other weights
    shutil.copytree(square_bundle, retrained)
    shutil.copyfile(os.path.join(square_bundle, "model.int8.onnx"), retrained / "model.onnx")
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", retrained, "--resume")
    assert code == 2
    one_error_line(err, "--resume", "another onnxruntime model file", "sha256")
    renormalised = tmp_path / "renormalised"  # same weights, other preprocessing
    shutil.copytree(square_bundle, renormalised)
    m = json.loads((renormalised / "manifest.json").read_text())
    m["preprocessing"]["mean"] = [0.4, 0.4, 0.4]
    (renormalised / "manifest.json").write_text(json.dumps(m))
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", renormalised, "--resume")
    assert code == 2
    one_error_line(err, "--resume", "other preprocessing")
    assert len(read_rows(out)) == 3
    assert run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle, "--resume")[0] == 0  # the same one


def test_resume_refuses_parts_without_a_run_file_or_a_digest(tmp_path, capsys, square_bundle, inputs):
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *inputs[:3], "--out", out, "-m", square_bundle, "--part-rows", 1)[0] == 0
    run = json.loads((out / "run.json").read_text())
    os.remove(out / "run.json")
    for extra in ([], ["--resume"], ["--resume", "--precision", "int8"]):
        code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle, *extra)
        assert code == 2
        one_error_line(err, "3 part(s) but no run.json")
    del run["model"]  # what an older icrt wrote
    (out / "run.json").write_text(json.dumps(run))
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle, "--resume")
    assert code == 2
    one_error_line(err, "records no model digest")
    assert len(read_rows(out)) == 3


# --- N8, N14: tampered parts, special files ---------------------------------------------------------------------


def _part(out, n, **cols):
    base = {"image": pa.array(["x.png"], pa.string()), "score": pa.array([0.5], pa.float64()),
            "error": pa.array([None], pa.string()), "width": pa.array([1], pa.int32()),
            "height": pa.array([1], pa.int32()), "patches": pa.array([1], pa.int32())}
    base.update(cols)
    pq.write_table(pa.table(base), out / f"part-{n:06d}.parquet")


@pytest.mark.parametrize("case, cols, words", [
    ("score strings", {"score": pa.array(["bad"], pa.string())}, "column score has type string"),
    ("error int64", {"error": pa.array([3], pa.int64())}, "column error has type int64"),
    ("image missing", {"image": pa.array([None], pa.string())}, "a row without an image"),
    ("NaN score", {"score": pa.array([float("nan")], pa.float64())}, "not a finite number"),
    ("inf score", {"score": pa.array([float("inf")], pa.float64())}, "not a finite number"),
    ("score and error", {"error": pa.array(["boom"], pa.string())}, "both a score and an error"),
    ("no column", {}, "not an icrt batch part"),
])
def test_resume_refuses_tampered_parts_with_one_line(tmp_path, capsys, square_bundle, inputs, case, cols, words):
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *inputs[:3], "--out", out, "-m", square_bundle)[0] == 0
    if case == "no column":
        pq.write_table(pa.table({"image": ["x.png"]}), out / "part-000002.parquet")
    else:
        _part(out, 2, **cols)
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", square_bundle, "--resume")
    assert code == 2
    one_error_line(err, str(out / "part-000002.parquet"), words)
    assert not os.path.exists(out / "_SUCCESS") or json.loads((out / "_SUCCESS").read_text())["rows"] == 3


def test_special_files_in_the_out_folder_are_one_line_not_a_hang(tmp_path, square_bundle, inputs):
    cases = {"lock-fifo": (".lock", "fifo", "is a FIFO"), "lock-folder": (".lock", "dir", "is a folder"),
             "summary-fifo": ("summary.json", "fifo", "is a FIFO"), "run-fifo": ("run.json", "fifo", "is a FIFO"),
             "part-fifo": ("part-000000.parquet", "fifo", "is a FIFO")}
    for case, (name, kind, words) in cases.items():
        out = tmp_path / case
        out.mkdir()
        os.mkfifo(out / name) if kind == "fifo" else (out / name).mkdir()
        code, stdout, err = icrt("batch", *inputs, "--out", out, "-m", square_bundle, timeout=120)
        assert code == 2, (case, err)
        one_error_line(err, str(out / name), words)


# --- N5: a model that fails at run time ------------------------------------------------------------------------


def test_a_model_failing_at_run_time_gives_error_rows_and_exit_2(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "fails", "fails-bright")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    paths = []
    for i, level in enumerate([0.2, 1.0, 0.3]):  # the white one alone in its batch makes the model fail
        p = imgs / f"{i}.png"
        textured(40, 40, seed=i, level=0.1).point(lambda v, level=level: int(v * level) if level < 1 else 255).save(p)
        paths.append(str(p))
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "batch", *paths, "--out", out, "-m", bundle, "--batch-size", 1)
    assert code == 2 and "Traceback" not in err
    rows = {r["image"]: r for r in read_rows(out)}
    assert rows[paths[1]]["score"] is None and "the model failed on this image's batch" in rows[paths[1]]["error"]
    assert rows[paths[0]]["score"] is not None and rows[paths[2]]["score"] is not None
    assert err.strip().splitlines()[-1].startswith("icrt: error: the model failed while running 1 batch(es)")
    assert json.loads((out / "summary.json").read_text())["counts"]["errors"] == 1


# --- N15: summary.json stays small -----------------------------------------------------------------------------


def test_summary_stays_small_with_many_long_error_paths(tmp_path, capsys, square_bundle):
    long = [str(tmp_path / ("d" * 200) / ("x" * 200) / f"{i:05d}{'y' * 3000}.png") for i in range(1200)]
    lst = write_list(tmp_path / "list.txt", long)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", "--files-from", lst, "--out", out, "-m", square_bundle)
    assert code == 1
    size = os.path.getsize(out / "summary.json")
    s = json.loads((out / "summary.json").read_text())
    assert size < 512 * 1024 and s["counts"]["errors"] == 1200 and 0 < len(s["errors"]) < 1200
    assert all(len(e["image"]) <= 1024 for e in s["errors"])
    code, out_text, err = run_cli(capsys, "report", out, "-o", tmp_path / "r.html")
    assert code == 0, err


# --- R3: a model file that is a link inside the bundle ------------------------------------------------------------


def _linked_bundle(tmp_path, square_bundle):
    """The square bundle with ``model.onnx -> model-v1.onnx`` (versioned files) and another model beside it
    (``model-v2.onnx``: the int8 weights), as the red team's R3 case."""
    b = tmp_path / "lnk"
    shutil.copytree(square_bundle, b)
    os.replace(b / "model.onnx", b / "model-v1.onnx")
    shutil.copyfile(b / "model.int8.onnx", b / "model-v2.onnx")
    (b / "model.onnx").symlink_to("model-v1.onnx")
    return b


def test_resume_checks_the_model_behind_a_linked_model_file(tmp_path, capsys, square_bundle, inputs):
    import hashlib

    b = _linked_bundle(tmp_path, square_bundle)
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *inputs[:3], "--out", out, "-m", b, "--part-rows", 1)[0] == 0
    run = json.loads((out / "run.json").read_text())
    v1 = hashlib.sha256((b / "model-v1.onnx").read_bytes()).hexdigest()
    assert run["model"]["files"]["onnxruntime"]["sha256"] == v1  # the file behind the link, not null
    os.remove(out / "part-000002.parquet")
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to("model-v2.onnx")  # retargeted: another model under the same name
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", b, "--resume")
    assert code == 2
    one_error_line(err, "--resume", "another onnxruntime model file", "sha256")
    assert len(read_rows(out)) == 2
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to("model-v1.onnx")  # the same model again: resumed
    assert run_cli(capsys, "batch", *inputs, "--out", out, "-m", b, "--resume")[0] == 0
    assert len(read_rows(out)) == 6


def test_resume_refuses_when_a_model_digest_is_missing_on_either_side(tmp_path, capsys, monkeypatch, square_bundle,
                                                                      inputs):
    import icrt.runtime.batch.folder as folder

    b = _linked_bundle(tmp_path, square_bundle)
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *inputs[:3], "--out", out, "-m", b, "--part-rows", 1)[0] == 0
    run = json.loads((out / "run.json").read_text())
    good = json.dumps(run)
    run["model"]["files"]["onnxruntime"]["sha256"] = None  # what the icrt before R3 recorded for a link
    (out / "run.json").write_text(json.dumps(run))
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", b, "--resume")
    assert code == 2
    one_error_line(err, "--resume", "model.onnx", "no SHA-256 in run.json")
    (out / "run.json").write_text(good)
    # a file the manifest check passed but that cannot be hashed now (unreadable, or swapped meanwhile)
    monkeypatch.setattr(folder, "model_file_digest", lambda path: (None, "permission denied"))
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", out, "-m", b, "--resume")
    assert code == 2
    one_error_line(err, "--resume", "model.onnx", "no SHA-256 here (permission denied)")
    assert len(read_rows(out)) == 3


def test_a_fifo_model_file_is_not_hashed_and_never_waited_on(tmp_path):
    from icrt.runtime.batch.folder import model_file_digest

    os.mkfifo(tmp_path / "model.onnx")
    assert model_file_digest(str(tmp_path / "model.onnx")) == (None, "not a regular file")
    assert model_file_digest(str(tmp_path / "missing.onnx")) == (None, "no such file")


# --- M2: a run.json that only names the format ----------------------------------------------------------------


def test_a_run_file_with_only_the_format_does_not_make_a_folder_icrts(tmp_path, capsys, square_bundle, inputs):
    f = tmp_path / "f"
    f.mkdir()
    (f / "run.json").write_text('{"format": "icrt-batch/1"}')
    (f / ".tmp-important").write_text("keep")
    (f / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in f.iterdir()}
    for extra in ([], ["--resume"]):
        code, _, err = run_cli(capsys, "batch", *inputs, "--out", f, "-m", square_bundle, *extra)
        assert code == 2
        one_error_line(err, str(f / "run.json"), "not a complete icrt-batch/1 run file", "icrt batch folder")
        assert {p: p.read_bytes() for p in f.iterdir()} == before


def test_a_complete_run_file_without_parts_makes_a_folder_icrts_only_when_nothing_else_is_there(
        tmp_path, capsys, square_bundle, inputs):
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *inputs[:2], "--out", out, "-m", square_bundle)[0] == 0
    run = (out / "run.json").read_text()
    stopped = tmp_path / "stopped"  # a run stopped before its first part: run.json, a lock, a half-written part
    stopped.mkdir()
    (stopped / "run.json").write_text(run)
    (stopped / ".lock").write_text("pid 1 on elsewhere\n")
    (stopped / ".tmp-abc.parquet").write_bytes(b"half")
    assert run_cli(capsys, "batch", *inputs, "--out", stopped, "-m", square_bundle)[0] == 0
    assert len(read_rows(stopped)) == 6 and not glob.glob(str(stopped / ".tmp-*"))
    foreign = tmp_path / "foreign"  # someone's folder with a copied run.json in it
    foreign.mkdir()
    (foreign / "run.json").write_text(run)
    (foreign / ".tmp-important").write_text("keep")
    (foreign / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in foreign.iterdir()}
    code, _, err = run_cli(capsys, "batch", *inputs, "--out", foreign, "-m", square_bundle)
    assert code == 2
    one_error_line(err, "not an icrt batch folder", "a run.json but no parts", "notes.txt")
    assert {p: p.read_bytes() for p in foreign.iterdir()} == before


# --- R6: a crafted part of many rows, compressed small ---------------------------------------------------------


def _one_path_part(path, rows: int, chars: int = 2000) -> int:
    """A part of ``rows`` rows that all name one ``chars``-character path (scored 0.5), written dictionary-encoded
    without the Arrow schema, so that it reads back as a plain string column: a few kB on disk, ``rows x chars``
    bytes once read whole. Its size in bytes."""
    import numpy as np

    one = "/x/" + "a" * (chars - 3)
    ones = pa.array(np.ones(rows, np.int32))
    image = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array([one]))
    table = pa.table({"image": image, "score": pa.array(np.full(rows, 0.5)), "error": pa.nulls(rows, pa.string()),
                      "width": ones, "height": ones, "patches": ones})
    pq.write_table(table, path, compression="zstd", store_schema=False)
    return os.path.getsize(path)


@pytest.mark.slow
def test_resume_refuses_a_part_with_more_rows_than_icrt_writes_before_reading_it(tmp_path, square_bundle, inputs):
    from icrt.runtime.batch.parts import MAX_PART_ROWS
    from tests.runtime.batch.helpers import icrt_peak_rss

    out = tmp_path / "out"
    code, err, base = icrt_peak_rss("batch", *inputs[:2], "--out", out, "-m", square_bundle)
    assert code == 0, err
    size = _one_path_part(out / "part-000001.parquet", 3 * MAX_PART_ROWS)  # the red team's case, 3 M rows
    assert size < 2_000_000
    success = (out / "_SUCCESS").read_bytes()
    code, err, peak = icrt_peak_rss("batch", *inputs, "--out", out, "-m", square_bundle, "--resume")
    assert code == 2
    one_error_line(err, "part-000001.parquet", "not an icrt batch part", "3,000,000 rows",
                   f"at most {MAX_PART_ROWS:,} a part")
    # refused from the footer: not one row read (read whole, the rows are 6 GB); the bound is the plain run's own peak
    # (the engine auto picks: OpenVINO's is larger than onnxruntime's) plus a margin
    assert peak < base + 200, f"{peak:.0f} MB, the run that wrote the folder {base:.0f} MB"
    assert [os.path.basename(p) for p in sorted(glob.glob(str(out / "part-*")))] == [
        "part-000000.parquet", "part-000001.parquet"] and (out / "_SUCCESS").read_bytes() == success  # untouched


@pytest.mark.slow
def test_resume_reads_a_part_batch_by_batch_in_bounded_memory(tmp_path, square_bundle, inputs):
    """A part at the cap (1 M rows of one 2,000-character path: 2 GB once read whole, as resume did) is read
    batch by batch: the resumed run stays far below that and counts every row."""
    from icrt.runtime.batch.parts import MAX_PART_ROWS
    from tests.runtime.batch.helpers import icrt_peak_rss

    out = tmp_path / "out"
    code, err, base = icrt_peak_rss("batch", *inputs[:2], "--out", out, "-m", square_bundle)
    assert code == 0, err
    _one_path_part(out / "part-000001.parquet", MAX_PART_ROWS)
    code, err, peak = icrt_peak_rss("batch", *inputs, "--out", out, "-m", square_bundle, "--resume")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["rows"] == 6 + MAX_PART_ROWS and summary["counts"]["skipped_resume"] == 2
    assert peak < base + 300, f"{peak:.0f} MB peak, {base:.0f} MB for a plain run"  # whole: > 2,000 MB more
    print(f"resume over a {MAX_PART_ROWS:,}-row part: {peak:.0f} MB peak ({base:.0f} MB for a plain run)")


def test_part_rows_above_the_cap_are_refused(tmp_path, capsys, square_bundle, inputs):
    from icrt.runtime.batch.parts import MAX_PART_ROWS

    with pytest.raises(SystemExit):
        run_cli(capsys, "batch", *inputs, "--out", tmp_path / "out", "-m", square_bundle, "--part-rows",
                MAX_PART_ROWS + 1)
    assert f"expected at most {MAX_PART_ROWS:,}" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
