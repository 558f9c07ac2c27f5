"""``icrt.score`` from several threads at once (R8): the backend and precision registries, the shared Scorers of
``icrt.score`` and every backend are safe to use concurrently. Each case runs in a fresh interpreter, so that the
registries start empty and fill while the threads race. Torch-free."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.runtime.fixtures import ROOT, needs, sample_images

CHILD = """
import json, sys, threading
paths, bundle, keys, calls = json.loads(sys.argv[1])
import icrt  # nothing else: the registries fill while the threads race

results, barrier = [], threading.Barrier(4)

def work(k):
    barrier.wait()  # the four start together
    for i in range(calls):
        path = paths[(i + k) % len(paths)]
        precision, backend = keys[(i + k) % len(keys)]
        try:
            score = icrt.score(path, model=bundle, precision=precision, backend=backend)["score"]
            results.append([path, precision, backend, score, None])
        except Exception as e:
            results.append([path, precision, backend, None, f"{type(e).__name__}: {e}"])

threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))
"""


def hammer(tmp_path, bundle, paths, keys, calls):
    """4 threads x ``calls`` calls of ``icrt.score`` in a fresh interpreter: [[path, precision, backend, score,
    error]]."""
    env = {**os.environ, "PYTHONPATH": ROOT, "ICRT_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps([paths, bundle, keys, calls])], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr, r.stderr  # no failed batch was told
    return json.loads(r.stdout)


def expected(bundle, paths, keys):
    """(path, precision, backend) -> the score of one Scorer used from one thread."""
    from icrt.runtime import Scorer

    out = {}
    for precision, backend in {tuple(k) for k in keys}:
        recs = Scorer.load(bundle, backend=backend, precision=precision).score_many(paths)
        out.update({(p, precision, backend): r["score"] for p, r in zip(paths, recs)})
    return out


def check(results, want, calls):
    assert len(results) == 4 * calls
    errors = [r for r in results if r[4]]
    assert not errors, f"{len(errors)} of {len(results)} calls failed: {errors[:3]}"
    wrong = [r for r in results if abs(r[3] - want[tuple(r[:3])]) > 1e-6]
    assert not wrong, f"{len(wrong)} calls scored another image or model: {wrong[:3]}"


BACKENDS = ["onnxruntime", pytest.param("openvino", marks=needs("openvino", "the [openvino] extra"))]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_four_threads_calling_score_all_get_the_right_scores(tmp_path, square_bundle, backend):
    """R8: OpenVINO failed 65 of 96 such calls ('Infer Request is busy', a half-filled registry) and scored another
    thread's image; every call must succeed with the score one thread alone gets."""
    paths = sample_images(tmp_path)
    keys = [["fp32", backend]]
    results = hammer(tmp_path, square_bundle, paths, keys, calls=24)
    check(results, expected(square_bundle, paths, keys), 24)


@pytest.mark.slow
def test_threads_switching_models_share_and_replace_the_open_scorers(tmp_path, square_bundle):
    """More (precision, backend) pairs than icrt.score keeps open: models are opened and dropped while other threads
    score with them."""
    paths = sample_images(tmp_path)[:3]
    backends = ["onnxruntime", "openvino"] if importlib.util.find_spec("openvino") else ["onnxruntime"]
    keys = [[precision, backend] for backend in backends for precision in ("fp32", "int8")]
    results = hammer(tmp_path, square_bundle, paths, keys, calls=12)
    check(results, expected(square_bundle, paths, keys), 12)
