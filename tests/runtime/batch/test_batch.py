"""`icrt batch --runner local` (runtime/batch/): Parquet parts equal `icrt score`, resume, lists, shards, the
watchdog. Needs pyarrow (the [scale] extra); torch-free. The Ray runner: test_batch_ray*.py.
Helpers shared with the Ray tests: tests/runtime/batch/helpers.py."""
from __future__ import annotations

import glob
import json
import os
import sys
import time

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from icrt.runtime.bundle.records import parquet_name  # noqa: E402
from icrt.runtime.scoring.inputs import shard_of  # noqa: E402
from tests.images import textured  # noqa: E402
from tests.runtime.batch.helpers import (  # noqa: E402
    TOL,
    assert_rows_match,
    icrt,
    kill_after_first_part,
    make_inputs,
    read_rows,
    reference,
    slow_env,
    write_list,
)
from tests.runtime.fixtures import run_cli  # noqa: E402


def test_local_rows_equal_icrt_score(tmp_path, capsys, square_bundle):
    paths = make_inputs(tmp_path / "in", 40)
    ref = reference(square_bundle, paths, tmp_path)
    capsys.readouterr()
    out = tmp_path / "out"
    lst = write_list(tmp_path / "list.txt", paths[20:])
    code, stdout, err = run_cli(capsys, "batch", *paths[:20], "--files-from", lst, "--out", out, "-m", square_bundle,
                                "--part-rows", 7)
    assert code == 1, err  # some files could not be scored
    rows = read_rows(out)
    assert_rows_match(rows, ref)
    parts = sorted(glob.glob(str(out / "part-*.parquet")))
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [7] * (len(paths) // 7) + (
        [len(paths) % 7] if len(paths) % 7 else [])
    assert not glob.glob(str(out / ".tmp-*"))
    assert os.path.isfile(out / "_SUCCESS")
    s = json.load(open(out / "summary.json"))
    n_err = sum("error" in r for r in ref)
    assert s["complete"] is True
    assert s["counts"]["rows"] == len(paths) and s["counts"]["errors"] == n_err
    assert s["counts"]["scored"] == len(paths) - n_err == sum(s["histogram"]["counts"])
    assert len(s["histogram"]["edges"]) == len(s["histogram"]["counts"]) + 1
    scores = sorted(r["score"] for r in ref if "error" not in r)
    assert s["scores"]["min"] == pytest.approx(scores[0]) and s["scores"]["max"] == pytest.approx(scores[-1])
    assert s["scores"]["quantiles"]["0.5"] == pytest.approx(float(__import__("numpy").median(scores)))
    assert {e["image"] for e in s["errors"]} == {parquet_name(r["image"]) for r in ref if "error" in r}
    assert s["bundle"]["name"] == "tiny-d2s-square" and s["bundle"]["precision"] == "fp32"
    assert s["speed"]["images_per_s"] > 0 and s["versions"]["pyarrow"]
    assert f"{out}: {len(paths)} row(s)" in stdout
    for r in ref:  # the error lines of `icrt score`
        if "error" in r and r["image"].isprintable():
            assert f"icrt: {r['image']}: {r['error']}" in err


def test_out_in_use_needs_resume_and_resume_keeps_rows(tmp_path, capsys, square_bundle):
    paths = make_inputs(tmp_path / "in", 12, broken=False, odd=False)
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *paths[:8], "--out", out, "-m", square_bundle, "--part-rows", 3)[0] == 0
    first = read_rows(out)
    code, _, err = run_cli(capsys, "batch", *paths, "--out", out, "-m", square_bundle)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    code, stdout, err = run_cli(capsys, "batch", *paths, "--out", out, "-m", square_bundle, "--resume",
                                "--part-rows", 3)
    assert code == 0, err
    rows = read_rows(out)
    assert rows[:len(first)] == first and len(rows) == 12 and len({r["image"] for r in rows}) == 12
    s = json.load(open(out / "summary.json"))
    assert s["counts"]["skipped_resume"] == 8 and s["counts"]["scored_this_run"] == 4 and s["counts"]["rows"] == 12
    # resuming a finished run does nothing but rewrite the summary
    assert run_cli(capsys, "batch", *paths, "--out", out, "-m", square_bundle, "--resume")[0] == 0
    assert read_rows(out) == rows
    # one folder, one model: another precision is refused
    code, _, err = run_cli(capsys, "batch", *paths, "--out", out, "-m", square_bundle, "--resume", "--precision", "int8")
    assert code == 2 and "precision" in err


def test_resume_ignores_half_written_files(tmp_path, capsys, square_bundle):
    paths = make_inputs(tmp_path / "in", 6, broken=False, odd=False)
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *paths[:3], "--out", out, "-m", square_bundle)[0] == 0
    (out / ".tmp-abcd.parquet").write_bytes(b"PAR1 half a part")  # what a kill during a write leaves
    os.remove(out / "_SUCCESS")
    assert run_cli(capsys, "batch", *paths, "--out", out, "-m", square_bundle, "--resume")[0] == 0
    assert sorted(r["image"] for r in read_rows(out)) == sorted(paths)
    assert not glob.glob(str(out / ".tmp-*")) and os.path.isfile(out / "_SUCCESS")


@pytest.mark.slow
def test_local_killed_and_resumed_has_no_duplicates_and_no_gaps(tmp_path, square_bundle):
    paths = make_inputs(tmp_path / "in", 100, broken=True)
    out = tmp_path / "out"
    lst = write_list(tmp_path / "list.txt", paths)
    argv = ["batch", "--files-from", lst, "--out", out, "-m", square_bundle, "--part-rows", 10]
    assert kill_after_first_part(argv, out, slow_env(tmp_path, delay=0.05))
    before = read_rows(out)
    assert 0 < len(before) < len(paths) and not os.path.exists(out / "_SUCCESS")
    code, stdout, err = icrt(*argv, "--resume", timeout=240)
    assert code == 1, err
    rows = read_rows(out)
    assert sorted(r["image"] for r in rows) == sorted(parquet_name(p) for p in paths)  # no gap, no duplicate
    assert rows[:len(before)] == before
    assert json.load(open(out / "summary.json"))["counts"]["rows"] == len(paths)


def test_batch_shards_partition_and_files_from(tmp_path, capsys, square_bundle):
    paths = make_inputs(tmp_path / "in", 30, broken=False)
    lst = write_list(tmp_path / "list.txt", paths)
    seen = []
    for i in range(3):
        out = tmp_path / f"shard{i}"
        code, _, err = run_cli(capsys, "batch", "--files-from", lst, "--shard", f"{i}/3", "--out", out,
                               "-m", square_bundle)
        assert code == 0, err
        rows = [r["image"] for r in read_rows(out)]
        assert sorted(rows) == sorted(parquet_name(p) for p in paths if shard_of(p, 3) == i)
        assert json.load(open(out / "summary.json"))["shard"] == f"{i}/3"
        seen += rows
    assert sorted(seen) == sorted(parquet_name(p) for p in paths)


@pytest.mark.parametrize("case", ["missing", "folder", "binary", "empty"])
def test_batch_bad_list_files_give_one_line_errors(tmp_path, capsys, square_bundle, case):
    lst = tmp_path / "list.txt"
    if case == "folder":
        lst.mkdir()
    elif case == "binary":
        textured(20, 20).save(lst, format="PNG")
    elif case == "empty":
        lst.write_text("\n\n")
    code, _, err = run_cli(capsys, "batch", "--files-from", lst, "--out", tmp_path / "out", "-m", square_bundle)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("icrt: error:"), err
    assert not glob.glob(str(tmp_path / "out" / "part-*"))


def test_uri_inputs(tmp_path, capsys, square_bundle):
    paths = make_inputs(tmp_path / "in", 5, broken=False, odd=False)
    ref = {parquet_name(r["image"]): r for r in reference(square_bundle, paths, tmp_path)}
    capsys.readouterr()
    folder = os.path.dirname(paths[0])
    code, _, err = run_cli(capsys, "batch", "file://" + folder, "file://" + folder + "/nothing.png",
                           "--out", tmp_path / "out", "-m", square_bundle)
    assert code == 1, err
    rows = {r["image"]: r for r in read_rows(tmp_path / "out")}
    assert rows.pop("file://" + folder + "/nothing.png")["error"] == "no such file"
    assert sorted(rows) == sorted("file://" + p for p in paths)
    for p in paths:
        assert abs(rows["file://" + p]["score"] - ref[p]["score"]) <= TOL


@pytest.mark.slow
def test_stalled_local_run_fails_clearly(tmp_path, square_bundle):
    paths = make_inputs(tmp_path / "in", 3, broken=False, odd=False)
    t0 = time.monotonic()
    code, _, err = icrt("batch", *paths, "--out", tmp_path / "out", "-m", square_bundle, "--stall-timeout", 2,
                        env=slow_env(tmp_path, stall=True), timeout=120)
    assert code == 2 and "no progress for 2 s" in err and "--resume" in err, err
    assert time.monotonic() - t0 < 100


def test_ray_options_need_the_ray_runner(tmp_path, capsys, square_bundle):
    paths = make_inputs(tmp_path / "in", 1, broken=False, odd=False)
    code, _, err = run_cli(capsys, "batch", *paths, "--out", tmp_path / "o", "-m", square_bundle, "--ray-address", "auto")
    assert code == 2 and "--runner ray" in err


def test_parts_written_before_the_file_column_was_image_are_resumed_and_reported(tmp_path, capsys, square_bundle):
    """Before icrt 0.2 the file column of a part was ``path``: such parts are still read (as ``image``)."""
    paths = make_inputs(tmp_path / "in", 4, broken=False, odd=False)
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *paths[:2], "--out", out, "-m", square_bundle)[0] == 0
    part = str(out / "part-000000.parquet")
    old = pq.read_table(part)
    pq.write_table(old.rename_columns(["path" if c == "image" else c for c in old.column_names]), part)
    assert run_cli(capsys, "batch", *paths, "--out", out, "-m", square_bundle, "--resume")[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["rows"] == 4 and summary["counts"]["scored_this_run"] == 2
    code, printed, _ = run_cli(capsys, "report", out, "-o", tmp_path / "r.html", "--thumbs", 0)
    assert code == 0 and "4 images, 4 scored, 0 errors" in printed


def test_engine_is_the_old_name_of_runner(tmp_path, capsys, square_bundle):
    paths = make_inputs(tmp_path / "in", 1, broken=False, odd=False)
    code, _, err = run_cli(capsys, "batch", *paths, "--out", tmp_path / "o", "-m", square_bundle, "--engine", "local")
    assert code == 0 and "--engine is now --runner" in err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["runner"] == "local"


def test_ray_runner_without_ray_says_what_to_install(tmp_path, capsys, square_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    paths = make_inputs(tmp_path / "in", 2, broken=False, odd=False)
    code, _, err = run_cli(capsys, "batch", *paths, "--out", tmp_path / "o", "-m", square_bundle, "--runner", "ray")
    from icrt.runtime.base.install import extra_hint

    assert code == 2 and extra_hint("scale") in err and len(err.strip().splitlines()) == 1


def test_ray_budget_leaves_cpus_for_reading():
    from icrt.runtime.base.errors import UnavailableError
    from icrt.runtime.batch.job import Job
    from icrt.runtime.batch.ray_runner import READ_RESERVE, ray_budget
    from icrt.runtime.scoring.options import ScorerOptions

    job = Job(out="o", scorer=ScorerOptions(model="b"), runner="ray", workers=2)
    cpw, gpw, threads = ray_budget(job, {"CPU": 2.0}, 2.0)
    assert cpw == 0.75 and gpw == 0 and threads == 1 and 2 * cpw + READ_RESERVE <= 2
    b = ScorerOptions(model="b")
    assert ray_budget(Job(out="o", scorer=b, workers=1), {"CPU": 2.0}, 2.0)[2] == 2  # one worker: both cores
    # the hang: two 1-CPU actors on 2 CPUs leave nothing for the read task -> refused at once
    with pytest.raises(UnavailableError, match="read tasks would wait"):
        ray_budget(Job(out="o", scorer=b, workers=2, cpus_per_worker=1.0), {"CPU": 2.0}, 2.0)
    with pytest.raises(UnavailableError, match="GPUs"):
        ray_budget(Job(out="o", scorer=b, workers=2, gpus_per_worker=1.0), {"CPU": 8.0, "GPU": 1.0}, 8.0)
    cpw, gpw, _ = ray_budget(Job(out="o", scorer=b, workers=2, gpus_per_worker=0.5), {"CPU": 8.0, "GPU": 1.0}, 8.0)
    assert (cpw, gpw) == (1.0, 0.5)


def test_one_run_per_folder(tmp_path, capsys, square_bundle):
    from icrt.runtime.batch.folder import lock_folder

    paths = make_inputs(tmp_path / "in", 2, broken=False, odd=False)
    out = tmp_path / "out"
    out.mkdir()
    held = lock_folder(str(out))  # another run writing this folder
    try:
        code, _, err = run_cli(capsys, "batch", *paths, "--out", out, "-m", square_bundle)
        assert code == 2 and "being written by another icrt batch run" in err and f"pid {os.getpid()}" in err
    finally:
        held.close()
    assert run_cli(capsys, "batch", *paths, "--out", out, "-m", square_bundle)[0] == 0  # free again


def test_slow_runs_still_write_parts(tmp_path):
    from icrt.runtime.batch.parts import PartWriter
    from icrt.runtime.bundle.records import records_table

    w = PartWriter(str(tmp_path), part_rows=1000, part_seconds=0.0)  # every row older than 0 s: written at once
    w.add(records_table([{"image": "a.png", "score": 0.5, "patches": 1, "width": 2, "height": 3}]))
    w.add(records_table([{"image": "b.png", "error": "no such file"}]))
    assert [os.path.basename(p) for p in w.parts] == ["part-000000.parquet", "part-000001.parquet"]
    assert [r["image"] for r in read_rows(tmp_path)] == ["a.png", "b.png"]


def test_a_model_that_gives_nan_for_every_image_is_a_model_error(tmp_path, capsys):
    """R13 in icrt batch as in icrt score: every row written with its own error, then one line, exit 2."""
    from tests.runtime.fixtures import make_bundle

    bundle = make_bundle(tmp_path / "nan", "const:nan")
    paths = make_inputs(tmp_path / "in", n=4, broken=False, odd=False)
    code, out, err = run_cli(capsys, "batch", *paths, "-m", bundle, "--out", tmp_path / "out")
    assert code == 2 and "for every image it scored (4 of them)" in err
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 4 and all(r["error"] == "model returned a non-finite score" for r in rows)


def test_summary_names_the_backend_that_ran_and_its_engines_version(tmp_path, capsys, square_bundle):
    """Issue 27: never "auto"; the engine's version beside icrt's."""
    paths = make_inputs(tmp_path / "in", n=3, broken=False, odd=False)
    assert run_cli(capsys, "batch", *paths, "-m", square_bundle, "--out", tmp_path / "out")[0] == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    ran = s["bundle"]["backend"]
    assert ran in ("onnxruntime", "openvino") and s["bundle"]["backend_asked"] == "auto"
    assert s["bundle"]["device"] == "cpu" and s["versions"][ran]
