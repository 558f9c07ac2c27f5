"""`icrt batch --runner ray` as a user runs it (a subprocess that starts and stops its own local Ray): killed at
the first part and resumed, and a run that cannot make progress. Skipped only when Ray Data is not installed."""
from __future__ import annotations

import json
import os
import time

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pyarrow")

pytestmark = pytest.mark.ray

from icrt.runtime.bundle.records import parquet_name  # noqa: E402
from tests.runtime.batch.helpers import (  # noqa: E402
    _session_pids,
    icrt,
    icrt_session,
    kill_after_first_part,
    make_inputs,
    plain_env,
    read_rows,
    slow_env,
    write_list,
)


def test_ray_killed_and_resumed_has_no_duplicates_and_no_gaps(tmp_path, square_bundle):
    paths = make_inputs(tmp_path / "in", 100)
    out = tmp_path / "out"
    lst = write_list(tmp_path / "list.txt", paths)
    argv = ["batch", "--files-from", lst, "--out", out, "-m", square_bundle, "--runner", "ray", "--workers", 2,
            "--part-rows", 10, "--images-per-task", 8, "--stall-timeout", 240]
    assert kill_after_first_part(argv, out, slow_env(tmp_path, delay=0.1), timeout=300)
    before = read_rows(out)
    assert 0 < len(before) < len(paths) and not os.path.exists(out / "_SUCCESS")
    code, stdout, err = icrt(*argv, "--resume", env=slow_env(tmp_path), timeout=300)
    assert code == 1, err
    rows = read_rows(out)
    assert sorted(r["image"] for r in rows) == sorted(parquet_name(p) for p in paths)  # no gap, no duplicate
    assert rows[:len(before)] == before
    assert json.load(open(out / "summary.json"))["counts"]["skipped_resume"] == len(before)


def test_ray_run_without_progress_fails_clearly(tmp_path, square_bundle):
    """Actors that never return: the run stops with one clear error within the stall timeout, not a hang, and
    leaves no Ray process behind."""
    import subprocess
    import sys

    from tests.runtime.fixtures import ROOT

    paths = make_inputs(tmp_path / "in", 4, broken=False, odd=False)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "icrt.runtime.cli", "batch", *paths, "--out", str(tmp_path / "out"),
                             "-m", square_bundle, "--runner", "ray", "--stall-timeout", "8"], cwd=ROOT,
                            env=slow_env(tmp_path, stall=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("icrt: error:")]
    assert len(lines) == 1 and "no progress for 8 s" in lines[0], err
    assert time.monotonic() - t0 < 200
    time.sleep(2)
    assert _session_pids(proc.pid) == []  # Ray was shut down with the run


def test_ray_runs_exit_cleanly_ten_times_in_a_row(tmp_path, square_bundle):
    """Issue 26: `icrt batch --runner ray` aborted (SIGABRT, exit 134) at exit in 2 of 6 fresh runs, after writing
    complete output: a parquet reader over Python bytes, released on an arrow pool thread while the interpreter
    finalized. Ten fresh processes in a row (every other one a resume, which reads the parts back before scoring;
    every one reads them all for the summary just before it exits), each starting and stopping its own Ray: every
    exit code is 0 or 1, the output is complete, and no process of the run is left."""
    paths = make_inputs(tmp_path / "in", 10, odd=False)  # 10 images + the broken files of every kind
    lst = write_list(tmp_path / "list.txt", paths)
    env = {**plain_env(), "PYTHONFAULTHANDLER": "1"}  # a crash would print where it happened
    runs = []
    t0 = time.monotonic()
    for i in range(10):
        out = tmp_path / f"out{i // 2}"
        resume = i % 2 == 1
        if resume:  # the run before's last part is lost: resumed, the parts are read back first
            os.remove(sorted(out.glob("part-*.parquet"))[-1])
        argv = ["batch", "--files-from", lst, "--out", out, "-m", square_bundle, "--runner", "ray", "--workers", 1,
                "--part-rows", 4, "--stall-timeout", 240, *(["--resume"] if resume else [])]
        code, _, err, left = icrt_session(*argv, env=env, timeout=300)
        rows = read_rows(out)
        runs.append((i, code, left, err))
        assert code in (0, 1), f"run {i}: exit {code}\n{err[-3000:]}"
        assert not left, f"run {i}: processes left behind: {left}"
        assert sorted(r["image"] for r in rows) == sorted(parquet_name(p) for p in paths), f"run {i}"
        assert json.loads((out / "_SUCCESS").read_text())["rows"] == len(paths)
        assert json.load(open(out / "summary.json"))["counts"]["rows"] == len(paths)
    print(f"10 Ray runs, exit codes {[c for _, c, _, _ in runs]}, {time.monotonic() - t0:.0f} s")
