"""Helpers of the `icrt batch` tests (local and Ray runners): inputs with odd names and broken files, the `icrt
score` reference, reading parts back, `icrt` in a subprocess, a run killed after its first part."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from icrt.runtime.bundle.records import PARQUET_COLUMNS, parquet_name  # noqa: E402
from tests.images import textured  # noqa: E402
from tests.runtime.fixtures import ROOT, broken_inputs  # noqa: E402

TOL = 1e-6
ODD_NAMES = ["with space.png", "com,ma#hash.png", "-leading-dash.png", os.fsdecode(b"caf\xe9-latin1.png"),
             "\u00fcml\u00e4ut.png"]


# --- helpers (also used by test_batch_ray*.py) -----------------------------------------------------------------


def make_inputs(folder, n: int = 40, broken: bool = True, odd: bool = True) -> list[str]:
    """n Pillow images of several sizes and noise levels, some awkwardly named, and the broken files of
    fixtures.broken_inputs (empty, truncated, not an image, bomb, missing, folder, broken link, FIFO)."""
    folder = str(folder)
    os.makedirs(os.path.join(folder, "good"), exist_ok=True)
    paths = []
    for i in range(n):
        name = ODD_NAMES[i % len(ODD_NAMES)].replace(".", f"-{i}.", 1) if odd and i % 7 == 3 else f"im{i:03d}.png"
        p = os.path.join(folder, "good", name)
        textured(30 + (i * 13) % 90, 25 + (i * 7) % 80, seed=i, level=(i % 9) / 8).save(p, format="PNG")
        paths.append(p)
    if broken:
        paths += [p for p, _ in broken_inputs(os.path.join(folder, "broken")).values()]
    return paths


def reference(bundle, paths, tmp, *extra) -> list[dict]:
    """`icrt score` records for ``paths`` (in process)."""
    from icrt.runtime.cli import main

    out = os.path.join(str(tmp), "reference.json")
    lst = os.path.join(str(tmp), "reference-list.txt")
    with open(lst, "wb") as f:
        f.write(b"".join(os.fsencode(p) + b"\n" for p in paths))
    code = main(["score", "--files-from", lst, "-m", bundle, "--format", "json", "-o", out, *extra])
    assert code in (0, 1)
    with open(out) as f:
        return json.load(f)


def read_rows(out) -> list[dict]:
    parts = sorted(glob.glob(os.path.join(str(out), "part-*.parquet")))
    rows = []
    for p in parts:
        t = pq.read_table(p)
        assert t.schema.names == list(PARQUET_COLUMNS)
        rows += t.to_pylist()
    return rows


def assert_rows_match(rows, ref):
    """One row per reference record, with its score (<= TOL), size, patches, or the very same error text."""
    paths = [r["image"] for r in rows]
    assert len(paths) == len(set(paths)), "duplicate rows"
    by_path = {r["image"]: r for r in rows}
    assert set(by_path) == {parquet_name(r["image"]) for r in ref}, "missing or extra rows"
    for r in ref:
        row = by_path[parquet_name(r["image"])]
        if "error" in r:
            assert row["error"] == r["error"] and row["score"] is None, (row, r)
        else:
            assert row["error"] is None, row
            assert abs(row["score"] - r["score"]) <= TOL, (row, r)
            assert (row["width"], row["height"], row["patches"]) == (r["width"], r["height"], r["patches"])


def write_list(path, paths) -> str:
    with open(path, "wb") as f:
        f.write(b"".join(os.fsencode(p) + b"\n" for p in paths))
    return str(path)


def slow_env(tmp_path, delay: float = 0.0, stall: bool = False) -> dict:
    """Environment for an `icrt` subprocess whose Scorers are slowed down (``delay`` s a record) or never return
    (``stall``): a sitecustomize module on PYTHONPATH wraps Scorer.iter_score in every Python process started with
    it, Ray's workers included. Test machinery only: the product has no such hook."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import os, time\n"
        "if os.environ.get('ICRT_TEST_DELAY') or os.environ.get('ICRT_TEST_STALL'):\n"
        "    import icrt.runtime.scoring.scorer as _s\n"
        "    _orig = _s.Scorer.iter_score\n"
        "    def iter_score(self, *a, **k):\n"
        "        if os.environ.get('ICRT_TEST_STALL'):\n"
        "            time.sleep(3600)\n"
        "        for rec in _orig(self, *a, **k):\n"
        "            time.sleep(float(os.environ.get('ICRT_TEST_DELAY') or 0))\n"
        "            yield rec\n"
        "    _s.Scorer.iter_score = iter_score\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), ROOT, os.environ.get("PYTHONPATH", "")]),
           "ICRT_PROGRESS": "0"}
    env.pop("ICRT_TEST_DELAY", None)
    env.pop("ICRT_TEST_STALL", None)
    if delay:
        env["ICRT_TEST_DELAY"] = str(delay)
    if stall:
        env["ICRT_TEST_STALL"] = "1"
    return env


def icrt(*argv, env=None, timeout=300):
    """`icrt` in a subprocess: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", *map(str, argv)], cwd=ROOT, env=env or plain_env(),
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def icrt_peak_rss(*argv, timeout=300):
    """`icrt` in a fresh process that reports its own peak resident memory: (exit code, stderr, peak MB)."""
    code = ("import resource, sys\n"
            "from icrt.runtime.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "sys.stdout.flush()\n"
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=ROOT, env=plain_env(), capture_output=True,
                       text=True, timeout=timeout)
    lines = p.stderr.splitlines()
    peak = [ln for ln in lines if ln.startswith("PEAK_KB ")]
    assert peak, p.stderr
    err = "\n".join(ln for ln in lines if not ln.startswith("PEAK_KB "))
    return p.returncode, err, int(peak[-1].split()[1]) / 1024


SLOW_GIL_C = r"""
/* PyGILState_Ensure called from a thread other than the main one (arrow's pool, Ray's C++ threads) is delayed by
   SLOWGIL_MS, as if that thread were descheduled on a loaded machine: the main thread runs on, e.g. into the
   interpreter's finalization, which a later GIL request from such a thread cannot survive (pthread_exit through a
   noexcept C++ destructor: std::terminate, SIGABRT). Test machinery only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

int PyGILState_Ensure(void) {
    static int (*real)(void) = 0;
    if (!real) real = (int (*)(void))dlsym(RTLD_NEXT, "PyGILState_Ensure");
    const char *ms = getenv("SLOWGIL_MS");
    if (ms && syscall(SYS_gettid) != getpid()) usleep(atoi(ms) * 1000);
    return real();
}
"""


def slow_gil_env(tmp_path, ms: int = 300) -> dict:
    """Environment for an `icrt` subprocess in which other threads' requests for the GIL come ``ms`` late (a shared
    library preloaded, built here from :data:`SLOW_GIL_C`): whatever such a thread still has to release when the
    process exits then meets a finalizing interpreter. Skips without Linux or a C compiler."""
    import shutil

    cc = shutil.which("cc") or shutil.which("gcc")
    if not sys.platform.startswith("linux") or cc is None:
        pytest.skip("needs Linux and a C compiler (cc) to build the preloaded library")
    src, lib = tmp_path / "slowgil.c", tmp_path / "slowgil.so"
    src.write_text(SLOW_GIL_C)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"], check=True, capture_output=True)
    return {**plain_env(), "LD_PRELOAD": str(lib), "SLOWGIL_MS": str(ms), "PYTHONFAULTHANDLER": "1"}


def plain_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), "ICRT_PROGRESS": "0"}


def _session_pids(sid: int) -> list[int]:
    pids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = open(stat).read()
            fields = text[text.rindex(")") + 2:].split()
            if int(fields[3]) == sid:  # field 6 of stat: the session id
                pids.append(int(stat.split("/")[2]))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def icrt_session(*argv, env=None, timeout=300, linger=60):
    """`icrt` in a subprocess of its own session: (exit code, stdout, stderr, pids of its session still alive
    ``linger`` s after it ended; they are then killed). A local Ray's processes are in that session."""
    proc = subprocess.Popen([sys.executable, "-m", "icrt.runtime.cli", *map(str, argv)], cwd=ROOT,
                            env=env or plain_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"icrt {' '.join(map(str, argv))} ran past {timeout} s: {stderr[-2000:]}") from None
    deadline = time.monotonic() + linger
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # Ray's processes end on their own after its shutdown; bounded wait
    left = _session_pids(proc.pid)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, stdout, stderr, left


def kill_after_first_part(argv, out, env, timeout=240) -> bool:
    """Start `icrt batch` in a new session, SIGKILL it (and every process of its session: a local Ray's too) as
    soon as its first part appears. True when it was killed before it finished."""
    proc = subprocess.Popen([sys.executable, "-m", "icrt.runtime.cli", *map(str, argv)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    killed = False
    try:
        while time.monotonic() < deadline:
            if glob.glob(os.path.join(str(out), "part-*.parquet")):
                for pid in [proc.pid] + _session_pids(proc.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed = True
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"no part appeared in {timeout} s")
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    time.sleep(0.5)
    for pid in _session_pids(proc.pid):  # nothing of the killed run may go on in the background
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert killed or proc.returncode in (0, 1), stderr
    return killed


# --- the local runner ------------------------------------------------------------------------------------------
