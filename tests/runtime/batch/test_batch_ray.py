"""`icrt batch --runner ray` in process, on one local Ray of 2 CPUs shared by this module's tests: rows equal
`icrt score`'s (and the local runner's), shards, a starving actor pool refused. Skipped only when Ray Data (the
[scale] extra) is not installed. Killed-and-resumed and stalled runs: test_batch_ray_subprocess.py."""
from __future__ import annotations

import json
import logging
import os
import signal
import time

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pyarrow")

pytestmark = pytest.mark.ray

from icrt.runtime.bundle.records import parquet_name  # noqa: E402
from icrt.runtime.scoring.inputs import shard_of  # noqa: E402
from tests.runtime.batch.helpers import assert_rows_match, make_inputs, read_rows, reference, write_list  # noqa: E402
from tests.runtime.fixtures import run_cli  # noqa: E402

LIMIT_S = 300  # per test


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=256 * 1024 * 1024)
    yield
    ray.shutdown()


@pytest.fixture
def deadline():
    """Fail (never hang) when a test runs past LIMIT_S: SIGALRM raises in the main thread."""
    def expired(signum, frame):
        raise TimeoutError(f"test ran past {LIMIT_S} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, LIMIT_S)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """~100 generated images (some awkwardly named: a space, a comma, a leading dash, a name that is not UTF-8),
    the broken files, and one image named twice (``dir/./x.png``: one file, two inputs, two rows)."""
    tmp = tmp_path_factory.mktemp("ray-inputs")
    paths = make_inputs(tmp / "in", 96)
    paths.append(os.path.join(os.path.dirname(paths[0]), ".", os.path.basename(paths[0])))
    return tmp, paths


def test_ray_rows_equal_icrt_score(local_ray, deadline, inputs, tmp_path, capsys, square_bundle):
    tmp, paths = inputs
    ref = reference(square_bundle, paths, tmp_path)
    capsys.readouterr()
    lst = write_list(tmp_path / "list.txt", paths)
    out = tmp_path / "out"
    t0 = time.monotonic()
    code, stdout, err = run_cli(capsys, "batch", "--files-from", lst, "--out", out, "-m", square_bundle,
                                "--runner", "ray", "--workers", 2, "--part-rows", 25, "--images-per-task", 16,
                                "--stall-timeout", 240)
    assert code == 1, err
    rows = read_rows(out)
    assert len(rows) == len(paths)
    assert_rows_match(rows, ref)
    s = json.load(open(out / "summary.json"))
    assert s["runner"] == "ray" and s["ray"]["workers"] == 2 and s["ray"]["cpus_per_worker"] == 0.75
    assert s["ray"]["version"] == ray.__version__ and s["counts"]["rows"] == len(paths)
    assert os.path.isfile(out / "_SUCCESS")
    for r in ref:  # `icrt score`'s error lines
        if "error" in r and r["image"].isprintable():
            assert f"icrt: {r['image']}: {r['error']}" in err
    print(f"ray runner, 2 workers: {len(paths)} inputs in {time.monotonic() - t0:.1f} s")


def test_ray_shards_partition(local_ray, deadline, inputs, tmp_path, capsys, square_bundle):
    tmp, paths = inputs
    lst = write_list(tmp_path / "list.txt", paths)
    seen = []
    for i in range(2):
        out = tmp_path / f"shard{i}"
        code, _, err = run_cli(capsys, "batch", "--files-from", lst, "--shard", f"{i}/2", "--out", out,
                               "-m", square_bundle, "--runner", "ray", "--workers", 1, "--stall-timeout", 240)
        assert code in (0, 1), err
        rows = [r["image"] for r in read_rows(out)]
        assert sorted(rows) == sorted(parquet_name(p) for p in paths if shard_of(p, 2) == i)
        seen += rows
    assert sorted(seen) == sorted(parquet_name(p) for p in paths)


def test_ray_refuses_a_pool_that_would_starve_reading(local_ray, deadline, inputs, tmp_path, capsys, square_bundle):
    """Issue 14's hang (two 1-CPU actors on 2 CPUs: the read task waited forever) is refused at once, clearly."""
    tmp, paths = inputs
    t0 = time.monotonic()
    code, _, err = run_cli(capsys, "batch", *paths[:5], "--out", tmp_path / "out", "-m", square_bundle,
                           "--runner", "ray", "--workers", 2, "--cpus-per-worker", 1)
    lines = [ln for ln in err.splitlines() if ln.startswith("icrt: error:")]
    assert code == 2 and len(lines) == 1 and "read tasks would wait" in lines[0], err
    assert time.monotonic() - t0 < 60
