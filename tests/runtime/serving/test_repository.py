"""``icrt triton``: the model repository, every config.pbtxt parsed with Triton's own ModelConfig protobuf (from
tritonclient) and checked against the ONNX model (read with onnxruntime); atomic writing; and, where the PyTriton
wheel's tritonserver is installed, the repository's Python model loaded in the real server and scored through.

Torch-free. The config checks need ``tritonclient[grpc]`` (the ``[serve]`` extra), the server test
``nvidia-pytriton`` too; without them those tests are skipped with the reason."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from icrt.runtime.base.errors import UserInputError
from icrt.runtime.bundle.manifest import EngineRecord, Manifest, engine_file_name, load_manifest, write_bundle
from icrt.runtime.bundle.precisions import get_precision
from icrt.runtime.bundle.records import OUTPUTS
from icrt.runtime.serving.repository import MARKER, write_repository
from tests.images import textured
from tests.runtime.fixtures import DATA, TINY_FILES, broken_inputs, run_cli, tiny_preprocessing

SERVE_EXTRA = "the [serve] extra"


def model_config_pb2():
    pytest.importorskip("google.protobuf", reason=f"protobuf is not installed ({SERVE_EXTRA})")
    return pytest.importorskip("tritonclient.grpc.model_config_pb2",
                               reason=f"tritonclient[grpc] is not installed ({SERVE_EXTRA})")


def parse_config(path):
    """A config.pbtxt through Triton's ModelConfig protobuf (a syntax or field error fails the test)."""
    pb = model_config_pb2()
    from google.protobuf import text_format

    with open(path) as f:
        text = f.read()
    assert text.startswith(MARKER)
    return text_format.Parse(text, pb.ModelConfig()), pb


def onnx_io(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return {i.name: i for i in sess.get_inputs()}, {o.name: o for o in sess.get_outputs()}


TRITON_OF_ORT = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}


def check_tensor_model(cfg, pb, onnx_path, manifest, max_batch):
    """The ONNX / plan model's config against the ONNX model: names, types, dims, the [batch] -> [1] reshape."""
    inputs, outputs = onnx_io(onnx_path)
    assert cfg.max_batch_size == max_batch
    assert [t.name for t in cfg.input] == [manifest.input_name] and [t.name for t in cfg.output] == [manifest.score_output]
    inp, out = cfg.input[0], cfg.output[0]
    onnx_in, onnx_out = inputs[inp.name], outputs[out.name]
    assert pb.DataType.Name(inp.data_type) == TRITON_OF_ORT[onnx_in.type]
    assert list(inp.dims) == list(onnx_in.shape[1:]) == [3, manifest.input_size, manifest.input_size]
    assert not isinstance(onnx_in.shape[0], int)  # a dynamic batch: Triton's batching adds it
    assert pb.DataType.Name(out.data_type) == TRITON_OF_ORT[onnx_out.type]
    assert list(out.dims) == [1]
    if len(onnx_out.shape) == 1:  # [batch]: the model's output has no dims beyond the batch
        assert out.HasField("reshape") and list(out.reshape.shape) == []
    else:
        assert not out.HasField("reshape")
    assert cfg.HasField("dynamic_batching")


# --- the repository's configs -----------------------------------------------------------------------------------


def test_cpu_repository_configs_match_the_onnx_model(square_bundle, tmp_path):
    out = tmp_path / "repo"
    report = write_repository(square_bundle, str(out), max_batch=16, instances=2, max_queue_delay_us=500, threads=1)
    m = load_manifest(square_bundle)
    assert sorted(os.listdir(out)) == ["icrt", "icrt_onnx"]
    assert report["targets"] == ["icrt_onnx"] and report["notes"] == []  # its fp16 engine is not fp32's

    onnx_file = out / "icrt_onnx" / "1" / "model.onnx"
    assert onnx_file.read_bytes() == open(m.file_for("fp32"), "rb").read()
    cfg, pb = parse_config(out / "icrt_onnx" / "config.pbtxt")
    assert cfg.name == "icrt_onnx" and cfg.platform == "onnxruntime_onnx" and not cfg.backend
    check_tensor_model(cfg, pb, str(onnx_file), m, 16)
    [group] = cfg.instance_group
    assert group.count == 2 and pb.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_CPU"
    assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert cfg.parameters["intra_op_thread_count"].string_value == "1"

    front, pb = parse_config(out / "icrt" / "config.pbtxt")
    assert front.name == "icrt" and front.backend == "python" and front.max_batch_size == 16
    [inp] = front.input
    assert inp.name == "image" and pb.DataType.Name(inp.data_type) == "TYPE_STRING" and list(inp.dims) == [1]
    types = {o.name: pb.DataType.Name(o.data_type) for o in front.output}
    assert types == {"score": "TYPE_FP32", "error": "TYPE_STRING", "patches": "TYPE_INT32", "width": "TYPE_INT32",
                     "height": "TYPE_INT32"} and list(types) == list(OUTPUTS)
    assert all(list(o.dims) == [1] for o in front.output)
    assert front.dynamic_batching.max_queue_delay_microseconds == 500
    assert front.instance_group[0].count == 2 and pb.ModelInstanceGroup.Kind.Name(front.instance_group[0].kind) == "KIND_CPU"
    params = {k: v.string_value for k, v in front.parameters.items()}
    assert json.loads(params["icrt_preprocessing"]) == m.preprocessing.to_dict()
    assert json.loads(params["icrt_score_range"]) == [0.0, 1.0]
    assert json.loads(params["icrt_targets"]) == [{"model": "icrt_onnx", "max_batch": 16, "dtype": "float32"}]
    assert params["icrt_input"] == m.input_name and params["icrt_score_output"] == m.score_output
    assert "EXECUTION_ENV_PATH" not in params

    # the Python model and its copy of the torch-free runtime (no default bundle, no templates, no caches)
    version = out / "icrt" / "1"
    assert (version / "model.py").read_text().startswith('"""icrt\'s front model')
    runtime = version / "icrt" / "runtime"
    copied = {str(p.relative_to(runtime)) for p in runtime.rglob("*") if p.is_file()}
    assert {"__init__.py", "scoring/scorer.py", "scoring/preprocess.py", "serving/repository.py",
            "backends/__init__.py"} <= copied
    assert all(p.endswith(".py") for p in copied) and not any("bundle/default/" in p or "triton_model" in p for p in copied)


def test_gpu_repository_with_the_tensorrt_accelerator(square_bundle, tmp_path):
    out = tmp_path / "repo"
    run = write_repository(square_bundle, str(out), device="gpu", tensorrt_accelerator="fp16", name="ic.v2")
    assert sorted(os.listdir(out)) == ["ic.v2", "ic.v2_onnx"] and run["targets"] == ["ic.v2_onnx"]
    cfg, pb = parse_config(out / "ic.v2_onnx" / "config.pbtxt")
    assert cfg.name == "ic.v2_onnx" and pb.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_GPU"
    [acc] = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert int(acc.parameters["max_workspace_size_bytes"]) > 0
    front, pb = parse_config(out / "ic.v2" / "config.pbtxt")
    assert pb.ModelInstanceGroup.Kind.Name(front.instance_group[0].kind) == "KIND_CPU"  # decoding runs on CPU


def test_int8_uses_the_cpu_form(square_bundle, tmp_path):
    out = tmp_path / "repo"
    write_repository(square_bundle, str(out), precision="int8")
    m = load_manifest(square_bundle)
    assert (out / "icrt_onnx" / "1" / "model.onnx").read_bytes() == open(m.file_for("int8"), "rb").read()
    cfg, pb = parse_config(out / "icrt_onnx" / "config.pbtxt")
    check_tensor_model(cfg, pb, m.file_for("int8"), m, 32)


def engine_bundle(folder, ccs=("8.7", "9.0"), versions=("10.3.0",), engine_max=16):
    """The tiny conv net with fp16 'engines' (placeholder bytes: config writing never reads them) for ``ccs``."""
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(DATA, TINY_FILES["fp32"]), os.path.join(folder, get_precision("fp32").file()))
    engines = []
    for v in versions:
        for cc in ccs:
            name = engine_file_name("fp16", v, cc)
            with open(os.path.join(folder, name), "wb") as f:
                f.write(b"not a real engine " + name.encode())
            engines.append(EngineRecord(precision="fp16", file=name, onnx=get_precision("fp32").file(), tensorrt=v,
                                        compute_capability=cc, min_batch=1, opt_batch=8, max_batch=engine_max))
    model = get_precision("fp32").file()
    files = {"fp32": {"onnxruntime": model}, "fp16": {"onnxruntime": model}}
    return write_bundle(str(folder), Manifest(kind="d2s", name="tiny-engines", preprocessing=tiny_preprocessing(),
                                              files=files, engines=engines))


def test_engines_become_a_tensorrt_plan_model_per_gpu_type(tmp_path):
    bundle = engine_bundle(tmp_path / "bundle")
    out = tmp_path / "repo"
    run = write_repository(bundle, str(out), precision="fp16", device="gpu", max_batch=32)
    assert sorted(os.listdir(out)) == ["icrt", "icrt_onnx", "icrt_trt"]
    assert run["targets"] == ["icrt_trt", "icrt_onnx"]
    cfg, pb = parse_config(out / "icrt_trt" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.name == "icrt_trt"
    m = load_manifest(bundle)
    check_tensor_model(cfg, pb, m.file_for("fp32"), m, 16)  # the engines' max batch (16) caps --max-batch 32
    assert dict(cfg.cc_model_filenames) == {cc: engine_file_name("fp16", "10.3.0", cc) for cc in ("8.7", "9.0")}
    for name in cfg.cc_model_filenames.values():
        assert (out / "icrt_trt" / "1" / name).read_bytes() == open(os.path.join(bundle, name), "rb").read()
    assert pb.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_GPU"
    front, _ = parse_config(out / "icrt" / "config.pbtxt")
    targets = json.loads(front.parameters["icrt_targets"].string_value)
    assert [(t["model"], t["max_batch"]) for t in targets] == [("icrt_trt", 16), ("icrt_onnx", 32)]

    # on CPU the engines are left out, and said so
    out_cpu = tmp_path / "repo-cpu"
    run = write_repository(bundle, str(out_cpu), precision="fp16")
    assert "icrt_trt" not in os.listdir(out_cpu) and "engines are left out" in run["notes"][0]


def test_engines_of_several_tensorrt_versions_need_a_choice(tmp_path):
    bundle = engine_bundle(tmp_path / "bundle", ccs=("8.7",), versions=("10.3.0", "10.7.0"))
    with pytest.raises(UserInputError, match="--tensorrt-version"):
        write_repository(bundle, str(tmp_path / "repo"), precision="fp16", device="gpu")
    assert not (tmp_path / "repo").exists()
    write_repository(bundle, str(tmp_path / "repo"), precision="fp16", device="gpu", tensorrt_version="10.7.0")
    cfg, _ = parse_config(tmp_path / "repo" / "icrt_trt" / "config.pbtxt")
    assert dict(cfg.cc_model_filenames) == {"8.7": engine_file_name("fp16", "10.7.0", "8.7")}


def test_a_missing_engine_file_is_a_bundle_error(tmp_path):
    bundle = engine_bundle(tmp_path / "bundle", ccs=("8.7",))
    os.remove(os.path.join(bundle, engine_file_name("fp16", "10.3.0", "8.7")))
    from icrt.runtime.bundle.manifest import BundleError
    with pytest.raises(BundleError, match="missing"):
        write_repository(bundle, str(tmp_path / "repo"), precision="fp16", device="gpu")
    assert os.listdir(tmp_path) == ["bundle"]  # nothing written, no staging folder left


def test_an_engine_that_is_not_the_one_the_manifest_recorded_is_not_copied(tmp_path, capsys):
    """R14: an engine whose bytes do not match its sha256 entry was copied into icrt_trt/1/ (exit 0)."""
    bundle = engine_bundle(tmp_path / "bundle", ccs=("8.7",))
    m = load_manifest(bundle)
    m.record_checksums()
    m.save()
    engine = os.path.join(bundle, engine_file_name("fp16", "10.3.0", "8.7"))
    with open(engine, "wb") as f:
        f.write(b"NOT A PLAN - tampered")
    code, out, err = run_cli(capsys, "triton", "-m", bundle, "--out", tmp_path / "repo", "--precision", "fp16",
                             "--device", "gpu")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"icrt: error: {engine}: SHA-256 ") and "is not the manifest's" in err
    assert sorted(os.listdir(tmp_path)) == ["bundle"]  # nothing written, no staging folder left


def test_the_repository_gets_the_bytes_that_were_checked(square_bundle, tmp_path, monkeypatch):
    """R14: check and copy are one read: a model file swapped after it was hashed does not reach the repository."""
    import icrt.runtime.serving.repository as repository

    bundle = str(tmp_path / "bundle")
    shutil.copytree(square_bundle, bundle)
    m = load_manifest(bundle)
    m.engines = []
    m.record_checksums()
    m.save()
    original = open(os.path.join(bundle, "model.onnx"), "rb").read()
    inspect = repository.inspect_onnx

    def swap_then_inspect(*args, **kwargs):  # the file is exchanged after it was read and checked
        shutil.copyfile(os.path.join(bundle, "model.int8.onnx"), os.path.join(bundle, "model.onnx"))
        return inspect(*args, **kwargs)

    monkeypatch.setattr(repository, "inspect_onnx", swap_then_inspect)
    write_repository(bundle, str(tmp_path / "repo"))
    assert (tmp_path / "repo" / "icrt_onnx" / "1" / "model.onnx").read_bytes() == original


def test_bundle_text_is_printable_in_the_configs_and_in_what_icrt_triton_prints(tmp_path, capsys):
    """R9: the model file name reached the terminal with its escape sequences, and config.pbtxt's header comment
    kept ESC, BEL and NUL."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    name = "m\x1b]0;TITLE\x07\x1b[2Jx.onnx"
    shutil.copyfile(os.path.join(DATA, TINY_FILES["fp32"]), bundle / name)
    write_bundle(str(bundle), Manifest(kind="d2s", name="evil\x1b]0;T\x07\x00\x9b31m name",
                                       preprocessing=tiny_preprocessing(), files={"fp32": {"onnxruntime": name}}))
    code, out, err = run_cli(capsys, "triton", "-m", bundle, "--out", tmp_path / "repo")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "m\\x1b]0;TITLE\\x07\\x1b[2Jx.onnx" in out
    for model in ("icrt", "icrt_onnx"):
        text = (tmp_path / "repo" / model / "config.pbtxt").read_text(encoding="ascii")
        header = text.split("\n", 1)[0]
        assert not any(c in header for c in "\x1b\x07\x00\x9b")
        assert "evil\\x1b]0;T\\x07\\x00\\x9b31m name" in header
        parse_config(tmp_path / "repo" / model / "config.pbtxt")  # still a config Triton reads


# --- writing: atomic, never over something else ---------------------------------------------------------------


def test_writing_is_atomic_and_never_replaces_what_icrt_did_not_write(square_bundle, tmp_path, capsys):
    out = tmp_path / "repo"
    # a folder that is not a model repository is refused and left alone
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "triton", "-m", square_bundle, "--out", out)
    assert code == 2 and "not a Triton model repository" in err and "notes.txt" in err
    assert os.listdir(out) == ["notes.txt"]
    # a file
    code, _, err = run_cli(capsys, "triton", "-m", square_bundle, "--out", out / "notes.txt")
    assert code == 2 and "not a folder" in err

    # an existing repository: icrt's models are added, another model is kept
    repo = tmp_path / "models"
    (repo / "other" / "1").mkdir(parents=True)
    (repo / "other" / "config.pbtxt").write_text('name: "other"\nbackend: "python"\n')
    code, out_text, err = run_cli(capsys, "triton", "-m", square_bundle, "--out", repo, "--max-batch", "8")
    assert code == 0, err
    assert "icrt_onnx" in out_text and "nvcr.io/nvidia/tritonserver" in out_text and "--shm-size" in out_text
    assert sorted(os.listdir(repo)) == ["icrt", "icrt_onnx", "other"]
    assert (repo / "other" / "config.pbtxt").read_text().startswith('name: "other"')
    # written again: icrt's models are replaced, no staging folder is left beside the repository
    code, _, err = run_cli(capsys, "triton", "-m", square_bundle, "--out", repo, "--max-batch", "4")
    assert code == 0, err
    cfg, _ = parse_config(repo / "icrt_onnx" / "config.pbtxt")
    assert cfg.max_batch_size == 4
    assert sorted(os.listdir(tmp_path)) == ["models", "repo"]
    # a model icrt did not write, under icrt's name, is not replaced
    shutil.rmtree(repo / "icrt")
    shutil.copytree(repo / "other", repo / "icrt")
    code, _, err = run_cli(capsys, "triton", "-m", square_bundle, "--out", repo)
    assert code == 2 and "icrt did not write" in err
    assert (repo / "icrt" / "config.pbtxt").read_text().startswith('name: "other"')


def test_a_stale_plan_model_goes_when_the_repository_is_rewritten(tmp_path):
    bundle = engine_bundle(tmp_path / "bundle", ccs=("8.7",))
    repo = tmp_path / "repo"
    write_repository(bundle, str(repo), precision="fp16", device="gpu")
    assert "icrt_trt" in os.listdir(repo)
    write_repository(bundle, str(repo), precision="fp32", device="gpu")  # no fp32 engines
    assert sorted(os.listdir(repo)) == ["icrt", "icrt_onnx"]


def test_the_tensorrt_accelerator_takes_only_the_modes_triton_has(square_bundle, tmp_path):
    from icrt.runtime.base.errors import UserInputError

    with pytest.raises(UserInputError, match="'bf16': choose from fp32, fp16, int8"):
        write_repository(square_bundle, str(tmp_path / "repo"), device="gpu", tensorrt_accelerator="bf16")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("argv, words", [
    (["--name", "a/b"], "model name"),
    (["--max-batch", "0"], "--max-batch"),
    (["--instances", "0"], "--instances"),
    (["--tensorrt-accelerator", "fp16"], "needs --device gpu"),
    (["--precision", "fp16"], "no fp16 model"),
    (["--precision", "bf16"], "Triton's onnxruntime backend has no bf16 kernels (it would run model.onnx in fp32)"),
])
def test_bad_options_are_one_line_errors(square_bundle, tmp_path, capsys, argv, words):
    code, _, err = run_cli(capsys, "triton", "-m", square_bundle, "--out", tmp_path / "repo", *argv)
    assert code == 2 and words in err and err.count("\n") == 1 and err.startswith("icrt: error: ")
    assert not (tmp_path / "repo").exists()


# --- the repository in the real tritonserver (the PyTriton wheel's, Python backend only) ------------------------

# The wheel's server has no onnxruntime backend, so this test puts a stand-in for <name>_onnx in the repository: a
# Python-backend model with the same name, tensors and batching that runs the same ONNX file on onnxruntime. The
# front model (model.py, its runtime copy, its BLS calls, pooling and errors) runs as written.
STAND_IN = '''
import numpy as np, onnxruntime as ort, os, json
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        here = os.path.dirname(os.path.abspath(__file__))
        self.sess = ort.InferenceSession(os.path.join(here, "model.onnx"), providers=["CPUExecutionProvider"])
        self.batches = []

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "image").as_numpy()
            s = self.sess.run(["score"], {"image": x})[0].reshape(len(x), 1).astype(np.float32)
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("score", s)]))
        return out
'''


def _stand_in(repo, name):
    folder = repo / f"{name}_onnx"
    text = (folder / "config.pbtxt").read_text()
    text = text.replace('platform: "onnxruntime_onnx"', 'backend: "python"')
    text = "\n".join(line for line in text.splitlines() if "reshape" not in line) + "\n"  # the stand-in gives [N, 1]
    (folder / "config.pbtxt").write_text(text)
    (folder / "1" / "model.py").write_text(STAND_IN)


@pytest.mark.server
def test_the_repository_serves_in_the_real_tritonserver(patches_bundle, tmp_path):
    pytest.importorskip("pytriton", reason=f"nvidia-pytriton (its tritonserver) is not installed ({SERVE_EXTRA})")
    pytest.importorskip("tritonclient.http", reason=f"tritonclient is not installed ({SERVE_EXTRA})")
    import pytriton
    from pytriton.utils.distribution import get_libs_path, get_stub_path

    from icrt.runtime.scoring.scorer import Scorer
    from icrt.runtime.serving.client import RemoteScorer
    from icrt.runtime.serving.process import ServerProcess, alive, descendants, free_ports
    from icrt.runtime.serving.server import libpython_env

    repo = tmp_path / "repo"
    write_repository(patches_bundle, str(repo), max_batch=8, max_queue_delay_us=1000)
    _stand_in(repo, "icrt")

    # the wheel's server, laid out as PyTriton lays it out: the stub for this Python in backends/python
    server = tmp_path / "tritonserver"
    shutil.copytree(os.path.join(os.path.dirname(pytriton.__file__), "tritonserver"), server,
                    ignore=shutil.ignore_patterns("python_backend_stubs"))
    shutil.copy(get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}"),
                server / "backends" / "python" / "triton_python_backend_stub")
    http, grpc, metrics = free_ports(3)
    env = dict(os.environ)
    env["PATH"] = os.path.join(sys.exec_prefix, "bin") + os.pathsep + env.get("PATH", "")  # the stub's Python
    log = open(tmp_path / "triton.log", "wb")
    with libpython_env(env):
        env["LD_LIBRARY_PATH"] += os.pathsep + str(get_libs_path())
        proc = subprocess.Popen([str(server / "bin" / "tritonserver"), f"--model-repository={repo}",
                                 f"--backend-directory={server / 'backends'}", "--http-address=127.0.0.1",
                                 "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", f"--http-port={http}",
                                 f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--exit-timeout-secs=5",
                                 "--backend-config=python,shm-default-byte-size=4194304"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        tree = {}
        try:
            sp = ServerProcess.__new__(ServerProcess)  # only its HTTP readiness probe
            sp.host, sp.http_port, sp.name = "127.0.0.1", http, "icrt"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                tree.update(descendants(proc.pid))
                if sp._get("/v2/models/icrt/ready") == 200:
                    break
                time.sleep(0.3)
            assert sp._get("/v2/models/icrt/ready") == 200, (tmp_path / "triton.log").read_text()[-3000:]
            tree.update(descendants(proc.pid))

            imgs = tmp_path / "imgs"
            imgs.mkdir()
            paths = []
            for i, (w, h) in enumerate([(64, 64), (200, 90), (31, 300), (97, 61)]):
                textured(w, h, seed=i, level=0.2 * i + 0.1).save(imgs / f"{i}.png")
                paths.append(str(imgs / f"{i}.png"))
            bad = broken_inputs(str(tmp_path / "bad"))
            paths += [bad[k][0] for k in ("text.jpg", "truncated.jpg", "empty.jpg", "missing.png")]
            local = Scorer.load(patches_bundle).score_many(paths)
            remote = RemoteScorer(f"http://127.0.0.1:{http}", batch_size=3).score_many(paths)
            assert [r["image"] for r in remote] == paths
            for lo, re_ in zip(local, remote):
                assert set(lo) == set(re_), (lo, re_)
                if "error" in lo:
                    assert re_["error"] == lo["error"]
                else:
                    assert abs(lo["score"] - re_["score"]) <= 1e-5
                    assert (lo["patches"], lo["width"], lo["height"]) == (re_["patches"], re_["width"], re_["height"])
            assert max(r.get("patches", 0) for r in local) > 8  # patches pooled across several BLS batches
            assert sp._get("/v2/health/ready") == 200  # still up after the bad files
        finally:
            proc.send_signal(2)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
            log.close()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(alive(p, s) for p, s in tree.items()):
                time.sleep(0.2)
            left = [p for p, s in tree.items() if alive(p, s)]
            for p in left:
                os.kill(p, 9)
            assert not left, f"processes left after tritonserver stopped: {left}"
