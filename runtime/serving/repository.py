"""A bundle as an NVIDIA Triton model repository (``icrt triton``), and the tensors icrt's servers speak.

``write_repository(bundle, out, ...)`` writes a folder Triton loads as it is (docs/serving.md):

```
OUT/<name>_onnx/config.pbtxt      platform onnxruntime_onnx: N x 3 x S x S -> score, dynamic batching
OUT/<name>_onnx/1/model.onnx      the bundle's ONNX file for the precision (and device)
OUT/<name>_trt/config.pbtxt       only with TensorRT engines in the bundle (--device gpu): platform tensorrt_plan,
OUT/<name>_trt/1/engine....plan   one engine per GPU type through cc_model_filenames
OUT/<name>/config.pbtxt           backend python: encoded image file in, score / error / patches / width / height out
OUT/<name>/1/model.py             decodes and preprocesses with icrt's own code, runs every input (patch) through
OUT/<name>/1/runtime/             the ONNX or plan model with BLS calls and pools the patch scores, as `icrt score`
```

The Python model carries a copy of icrt's torch-free ``runtime`` package (pure Python: it needs numpy and Pillow
in the Python the Triton Python backend runs, not an installed icrt). Its settings (preprocessing, score range,
the models it calls) are ``parameters`` of its config.pbtxt.

The same request / response layout is used by ``icrt serve`` (PyTriton) and read by ``icrt score --url``
(``runtime.serving.client``): the score record's tensors (``runtime.bundle.records``: input ``image``, BYTES, one encoded
image file per batch row; outputs ``score``, ``error``, ``patches``, ``width``, ``height``).

Every file taken from the bundle (the ONNX model, the engines) is read once, checked against the manifest's SHA-256
and written from the bytes that were checked (``Manifest.read_file``): a damaged or swapped file never reaches the
repository. Text from the bundle is made printable (``runtime.base.text.printable``) in what is written and printed.

Nothing heavy is imported at module level (numpy and onnxruntime load inside the functions that need them).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

from icrt.runtime.base.errors import UserInputError
from icrt.runtime.base.text import printable
from icrt.runtime.bundle.manifest import BundleError, Manifest, load_manifest
from icrt.runtime.bundle.precisions import get_precision
from icrt.runtime.bundle.records import IMAGE_INPUT, OUTPUT_TENSORS
from icrt.runtime.serving.limits import ACCELERATOR_MODES, ARITHMETIC_ONLY, DEFAULT_MODEL_NAME, check

# --- model repository -------------------------------------------------------------------------------------------

MARKER = "# written by icrt triton"  # first line of every config.pbtxt icrt writes: such a model may be replaced
DEVICES = ("cpu", "gpu")
# Triton data types of ONNX tensor types (onnxruntime's names)
_TRITON_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64"}
NUMPY_TYPES = {"TYPE_FP32": "float32", "TYPE_FP16": "float16", "TYPE_FP64": "float64"}


def model_names(name: str) -> dict:
    """The models of a repository for ``name``: the front (Python) model, the ONNX model, the TensorRT plan model."""
    return {"front": name, "onnx": f"{name}_onnx", "trt": f"{name}_trt"}


def _pbstr(text: str) -> str:
    """``text`` as a protobuf text-format string literal (non-ASCII as octal-escaped UTF-8, which every parser reads)."""
    out = []
    for b in str(text).encode("utf-8", "surrogateescape"):
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    """Bundle text for a ``#`` comment: one line, control characters as ``\\xNN``, non-ASCII as ``\\uNNNN``."""
    return printable(" ".join(str(text).split())).encode("ascii", "backslashreplace").decode()


def _dims(values) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]" if values else "[ ]"


def _tensor(name: str, dtype: str, dims, reshape=None) -> str:
    text = f"  {{\n    name: {_pbstr(name)}\n    data_type: {dtype}\n    dims: {_dims(dims)}\n"
    if reshape is not None:
        text += f"    reshape: {{ shape: {_dims(reshape)} }}\n"
    return text + "  }"


def _parameters(params: dict) -> str:
    return "".join(f"parameters {{\n  key: {_pbstr(k)}\n  value: {{ string_value: {_pbstr(v)} }}\n}}\n"
                   for k, v in params.items())


def _header(manifest: Manifest, what: str) -> str:
    return (f"{MARKER} from the bundle {_comment(manifest.name)} ({_comment(manifest.root)}): {what}.\n"
            "# Rewrite it with `icrt triton` rather than by hand.\n")


def inspect_onnx(path: str, input_name: str, score_output: str, size: int, data: bytes | None = None) -> dict:
    """The ONNX model's input and score output as Triton sees them: ``{"input_type", "input_dims", "score_type",
    "score_dims", "score_reshape"}``. BundleError when it cannot serve as ``N x 3 x size x size -> [N]``. ``data``:
    the file's checked bytes, read instead of ``path`` (external data refused)."""
    from icrt.runtime.backends.onnxruntime import check_shapes, load_error, open_session

    try:  # without graph optimisation (simulate_qdq): the declarations are all that is read
        sess = open_session(path if data is None else data, threads=1, simulate_qdq=True)
    except Exception as e:  # onnxruntime raises its own types for broken files
        raise BundleError(f"{path}: onnxruntime cannot read this model ({type(e).__name__}: {load_error(e)})") from None
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = {o.name: o for o in sess.get_outputs()}
    if input_name not in inputs:
        raise BundleError(f"{path}: no input named {input_name!r} (has {', '.join(inputs)})")
    if score_output not in outputs:
        raise BundleError(f"{path}: no output named {score_output!r} (has {', '.join(outputs)})")
    image, score = inputs[input_name], outputs[score_output]
    check_shapes(path, image, score, size)
    if isinstance(image.shape[0], int):
        raise BundleError(f"{path}: input {input_name!r} has a fixed batch of {image.shape[0]}; Triton's batching needs "
                          "a dynamic batch dimension (export with a dynamic batch)")
    if image.type not in _TRITON_TYPES or score.type not in _TRITON_TYPES:
        raise BundleError(f"{path}: input {image.type} / output {score.type}: expected float tensors")
    rank1 = len(score.shape) == 1
    return {"input_type": _TRITON_TYPES[image.type], "input_dims": [3, size, size],
            "score_type": _TRITON_TYPES[score.type], "score_dims": [1], "score_reshape": [] if rank1 else None}


def onnx_config(manifest: Manifest, name: str, info: dict, max_batch: int, instances: int, device: str,
                accelerator: str | None = None, threads: int | None = None) -> str:
    """config.pbtxt of the ONNX model (platform onnxruntime_onnx)."""
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    text = _header(manifest, "the model itself, on onnxruntime") + (
        f"name: {_pbstr(name)}\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: {max_batch}\n"
        f"input [\n{_tensor(manifest.input_name, info['input_type'], info['input_dims'])}\n]\n"
        f"output [\n{_tensor(manifest.score_output, info['score_type'], info['score_dims'], info['score_reshape'])}\n]\n"
        # the front model sends whole batches; this merges what several of its instances send at once, without delay
        "dynamic_batching { }\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]\n")
    if accelerator:
        text += ("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator [\n      {\n"
                 "        name: \"tensorrt\"\n"
                 f"        parameters {{ key: \"precision_mode\" value: {_pbstr(accelerator.upper())} }}\n"
                 "        parameters { key: \"max_workspace_size_bytes\" value: \"1073741824\" }\n"
                 "      }\n    ]\n  }\n}\n")
    if threads:
        text += _parameters({"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"})
    return text


def plan_config(manifest: Manifest, name: str, info: dict, max_batch: int, instances: int, engines: dict) -> str:
    """config.pbtxt of the TensorRT model (platform tensorrt_plan): ``engines`` is compute capability -> file."""
    text = _header(manifest, "TensorRT engines, one per GPU type") + (
        f"name: {_pbstr(name)}\nplatform: \"tensorrt_plan\"\nmax_batch_size: {max_batch}\n"
        f"input [\n{_tensor(manifest.input_name, info['input_type'], info['input_dims'])}\n]\n"
        f"output [\n{_tensor(manifest.score_output, info['score_type'], info['score_dims'], info['score_reshape'])}\n]\n"
        "dynamic_batching { }\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_GPU\n  }}\n]\n")
    for cc, file in sorted(engines.items()):
        text += f"cc_model_filenames {{\n  key: {_pbstr(cc)}\n  value: {_pbstr(file)}\n}}\n"
    return text


def front_config(manifest: Manifest, name: str, targets: list[dict], max_batch: int, instances: int,
                 queue_delay_us: int, execution_env: str | None = None) -> str:
    """config.pbtxt of the Python model that takes encoded image files."""
    out = [_tensor(name, dtype, [1]) for name, (dtype, _) in OUTPUT_TENSORS.items()]
    params = {"icrt_preprocessing": json.dumps(manifest.preprocessing.to_dict()),
              "icrt_score_range": json.dumps(list(manifest.score_range)),
              "icrt_targets": json.dumps(targets), "icrt_input": manifest.input_name,
              "icrt_score_output": manifest.score_output, "icrt_bundle": manifest.name}
    if execution_env:
        params["EXECUTION_ENV_PATH"] = execution_env
    return _header(manifest, "encoded image files in, scores out (decoding and patches as `icrt score`)") + (
        f"name: {_pbstr(name)}\nbackend: \"python\"\nmax_batch_size: {max_batch}\n"
        f"input [\n{_tensor(IMAGE_INPUT, 'TYPE_STRING', [1])}\n]\n"
        f"output [\n{(',' + chr(10)).join(out)}\n]\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}\n]\n" + _parameters(params))


def _cc_key(cc) -> str:
    """A compute capability as Triton's cc_model_filenames keys it: ``"8.7"`` (``"87"`` and ``8.7`` also read)."""
    text = str(cc).strip()
    if re.fullmatch(r"\d{2,3}", text):
        text = f"{text[:-1]}.{text[-1]}"
    if not re.fullmatch(r"\d+\.\d+", text):
        raise BundleError(f"engine compute capability {cc!r}: expected MAJOR.MINOR")
    return text


def _engines(manifest: Manifest, precision: str, tensorrt_version: str | None) -> list:
    """The bundle's engines for ``precision`` (one TensorRT version), checked: [(cc key, record, path, bytes)], the
    bytes read once and checked against the manifest's SHA-256."""
    engines = manifest.engines_for(precision)
    if tensorrt_version:
        engines = [e for e in engines if str(e.tensorrt) == tensorrt_version]
        if not engines:
            have = sorted({str(e.tensorrt) for e in manifest.engines_for(precision)})
            raise UserInputError(f"{manifest.root}: no {precision} TensorRT {tensorrt_version} engines in this bundle "
                                 f"(has: {', '.join(have) or 'none'})")
    versions = sorted({str(e.tensorrt) for e in engines})
    if len(versions) > 1:
        raise UserInputError(f"{manifest.root}: {precision} engines for several TensorRT versions ({', '.join(versions)}); "
                             "a Triton release has one: choose with --tensorrt-version")
    picked = {}
    for e in engines:
        cc = _cc_key(e.compute_capability)
        if cc in picked:
            raise BundleError(f"{manifest.root}: two {precision} engines for compute capability {cc}")
        path = manifest.path(e.file, "engines.file")
        if not os.path.isfile(path):
            raise BundleError(f"{manifest.root}: manifest names the engine {e.file}, but the file is missing")
        picked[cc] = (e, path, manifest.read_file(e.file, "engines.file"))
    return [(cc, e, p, data) for cc, (e, p, data) in picked.items()]


def _is_icrt_model(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "config.pbtxt"), encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(MARKER)
    except OSError:
        return False


def _repository_problem(out: str) -> str | None:
    """Why ``out`` (an existing folder) is not a model repository icrt may write into (None: it is one)."""
    for entry in sorted(os.listdir(out)):
        path = os.path.join(out, entry)
        if entry.startswith("."):
            continue
        if not os.path.isdir(path) or os.path.islink(path):
            return f"it holds {entry}, which is not a model folder"
        sub = os.listdir(path)
        if "config.pbtxt" not in sub and not any(s.isdigit() for s in sub):
            return f"it holds {entry}/, which is not a model folder (no config.pbtxt or version folder)"
    return None


def _copy_runtime(dst: str) -> None:
    """The torch-free runtime (its .py files only; no default bundle, no templates) into ``dst/icrt/runtime``, under
    an ``icrt`` package of its own that holds nothing else (the front model imports ``icrt.runtime``)."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(os.path.join(dst, "icrt"))
    with open(os.path.join(dst, "icrt", "__init__.py"), "w", encoding="utf-8") as f:
        f.write('"""icrt\'s torch-free runtime, copied here by icrt triton for the front model."""\n')
    dst = os.path.join(dst, "icrt", "runtime")

    def ignore(folder, names):
        skip = set()
        for n in names:
            p = os.path.join(folder, n)
            if os.path.isdir(p):
                if n in ("__pycache__", "default", "triton_model") or n.startswith("."):
                    skip.add(n)
            elif not n.endswith(".py"):
                skip.add(n)
        return skip

    shutil.copytree(src, dst, ignore=ignore)


def _umask_dir_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def write_repository(bundle: str, out: str, name: str = DEFAULT_MODEL_NAME, precision: str = "fp32",
                     max_batch: int = 32, instances: int = 1, device: str = "cpu", tensorrt_accelerator: str | None = None,
                     max_queue_delay_us: int = 2000, threads: int | None = None, tensorrt_version: str | None = None,
                     execution_env: str | None = None) -> dict:
    """Write the Triton model repository for ``bundle`` into ``out`` (see the module notes); a summary dict.

    ``out`` is made (atomically: built in a hidden sibling folder, then renamed), or, when it is already a model
    repository, icrt's models are added to it, each replacing the same-named model icrt wrote before (a model folder
    icrt did not write is never replaced, nor a folder that is not a repository). ``device``: where the ONNX (and
    plan) models run; the Python model always runs on CPU. ``tensorrt_accelerator``: the onnxruntime backend's
    TensorRT execution accelerator with this precision_mode (GPU only)."""
    check(name, max_batch, instances, max_queue_delay_us)
    if device not in DEVICES:
        raise UserInputError(f"--device {device!r}: choose from {', '.join(DEVICES)}")
    if tensorrt_accelerator and device != "gpu":
        raise UserInputError("--tensorrt-accelerator needs --device gpu (TensorRT runs on NVIDIA GPUs only)")
    if tensorrt_accelerator and tensorrt_accelerator not in ACCELERATOR_MODES:
        raise UserInputError(f"--tensorrt-accelerator {tensorrt_accelerator!r}: choose from "
                             f"{', '.join(ACCELERATOR_MODES)} (the precision modes of Triton's onnxruntime backend)")
    manifest = load_manifest(bundle)
    if precision in ARITHMETIC_ONLY and not (device == "gpu" and manifest.engines_for(precision)):
        raise UserInputError(f"--precision {precision}: Triton's onnxruntime backend has no {precision} kernels (it "
                             f"would run {get_precision(precision).file()} in fp32); "
                             f"{precision} runs as TensorRT engines (icrt build --precision {precision}, then --device "
                             f"gpu) or in icrt serve --backend openvino on a CPU with bf16 units")
    names = model_names(name)
    notes = []
    # the ONNX file: the onnxruntime (CPU) form, or on GPU the form made for TensorRT (int8: QDQ) when there is one
    onnx_path, onnx_data = manifest.model_bytes(precision, "tensorrt" if device == "gpu" else "onnxruntime")
    info = inspect_onnx(onnx_path, manifest.input_name, manifest.score_output, manifest.input_size, onnx_data)
    engines = []
    if manifest.engines_for(precision):
        if device == "gpu":
            engines = _engines(manifest, precision, tensorrt_version)
        else:
            notes.append(f"the bundle's {precision} TensorRT engines are left out: --device cpu")
    plan_batch = max_batch
    if engines:
        limits = [e.max_batch for _, e, _, _ in engines if e.max_batch]
        plan_batch = min([max_batch, *limits])
        if plan_batch < max_batch:
            notes.append(f"{names['trt']}: max_batch_size {plan_batch}, the engines' largest batch")

    # what the front model calls, in order: the plan model when there is one (falls back to ONNX when it cannot load)
    targets = []
    if engines:
        eng_onnx = engines[0][1].onnx
        eng_info = info
        eng_path = manifest.path(eng_onnx, "engines.onnx") if eng_onnx else None
        # the engines' ONNX is often the file already read and inspected above: reuse ``info``, read only another
        if eng_path and eng_path != onnx_path and os.path.isfile(eng_path):
            eng_info = inspect_onnx(eng_path, manifest.input_name, manifest.score_output, manifest.input_size,
                                    manifest.read_file(eng_onnx, "engines.onnx"))
        targets.append({"model": names["trt"], "max_batch": plan_batch, "dtype": NUMPY_TYPES[eng_info["input_type"]]})
    targets.append({"model": names["onnx"], "max_batch": int(max_batch), "dtype": NUMPY_TYPES[info["input_type"]]})

    out = os.path.abspath(out)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserInputError(f"--out {printable(out)}: exists and is not a folder")
    existing = os.path.isdir(out)
    if existing:
        problem = _repository_problem(out)
        if problem:
            raise UserInputError(f"--out {printable(out)}: not a Triton model repository ({problem}); "
                                 "pass a new or empty folder, or a model repository")
        for model in names.values():
            path = os.path.join(out, model)
            if os.path.lexists(path) and not _is_icrt_model(path):
                raise UserInputError(f"{printable(path)}: a model icrt did not write is in the way; remove it or "
                                     "choose another --name")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.icrt-triton-", dir=parent)
    try:
        os.chmod(stage, _umask_dir_mode())
        written = {}
        # the ONNX model
        d = os.path.join(stage, names["onnx"])
        os.makedirs(os.path.join(d, "1"))
        _write_bytes(os.path.join(d, "1", "model.onnx"), onnx_data)  # the bytes that were checked
        _write(os.path.join(d, "config.pbtxt"), onnx_config(manifest, names["onnx"], info, int(max_batch), int(instances),
                                                             device, tensorrt_accelerator, threads))
        written[names["onnx"]] = os.path.basename(onnx_path)
        # the TensorRT plan model
        if engines:
            d = os.path.join(stage, names["trt"])
            os.makedirs(os.path.join(d, "1"))
            files = {}
            for cc, _, path, data in engines:
                files[cc] = os.path.basename(path)
                _write_bytes(os.path.join(d, "1", files[cc]), data)
            _write(os.path.join(d, "config.pbtxt"), plan_config(manifest, names["trt"], eng_info, plan_batch,
                                                                 int(instances), files))
            written[names["trt"]] = ", ".join(f"sm {cc}: {f}" for cc, f in sorted(files.items()))
        # the Python front model
        d = os.path.join(stage, names["front"])
        os.makedirs(os.path.join(d, "1"))
        template = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_model", "model.py")
        shutil.copyfile(template, os.path.join(d, "1", "model.py"))
        _copy_runtime(os.path.join(d, "1"))
        _write(os.path.join(d, "config.pbtxt"), front_config(manifest, names["front"], targets, int(max_batch),
                                                              int(instances), int(max_queue_delay_us), execution_env))
        written[names["front"]] = "model.py + icrt/runtime/ (Python backend)"
        _install(stage, out, existing, written, names)
    finally:
        if os.path.isdir(stage):
            shutil.rmtree(stage, ignore_errors=True)
    return {"repository": out, "models": written, "targets": [t["model"] for t in targets], "notes": notes,
            "precision": precision, "device": device, "bundle": manifest.root}


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


def _write_bytes(path: str, data: bytes) -> None:
    """A new file in the staging folder icrt made (private to this run until it is renamed into place)."""
    with open(path, "xb") as f:
        f.write(data)


def _install(stage: str, out: str, existing: bool, written: dict, names: dict) -> None:
    """Move the staged models into place: the whole folder when ``out`` is new, else model by model (each model
    folder swapped with a rename; icrt models of the same name family that were not written this time go)."""
    if not existing:
        os.rename(stage, out)
        return
    old = os.path.join(stage, ".old")
    os.mkdir(old)
    moved = []  # (model, had an old folder)
    try:
        for model in names.values():
            target = os.path.join(out, model)
            had = os.path.lexists(target)
            if had:
                os.rename(target, os.path.join(old, model))
            moved.append((model, had))
            if model in written:
                os.rename(os.path.join(stage, model), target)
    except OSError:
        for model, had in reversed(moved):  # put the previous models back
            target = os.path.join(out, model)
            if model in written and os.path.isdir(target):
                shutil.rmtree(target, ignore_errors=True)
            if had:
                os.rename(os.path.join(old, model), target)
        raise
