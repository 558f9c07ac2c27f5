"""export_checkpoint: checkpoint -> bundle (fp32 ONNX + optional fp16 / int8 / TensorRT) with parity figures.

The pipeline is a list of stages run by :class:`export.stages.Stages` (timed, reported the same way):
check set, fp32 (+ parity with PyTorch), one stage per extra precision (export.precisions), engines, write.
Every form is scored on the check images through the runtime's Scorer, as ``icrt score`` would score them.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np

from runtime.errors import EXIT_PARITY, IcrtError
from runtime.files import write_json
from runtime.manifest import DEFAULT_SCORE, EXPORT_REPORT, FILE_NAMES, INPUT_NAME, LEVELS_OUTPUT, SCORE_OUTPUT, Manifest
from runtime.preprocess import Preprocessing

from .checks import (CheckSet, Scores, check_set_from_images, check_set_from_paths, data_name, generated_images,
                     score_check_set)
from .stages import Stages

log = logging.getLogger("export")

FP32_TOLERANCE = 1e-4  # max |score difference| per model input, onnxruntime fp32 vs PyTorch
FILES = FILE_NAMES  # precision / form -> file name in the bundle


class ExportError(IcrtError):
    """Export cannot proceed (bad checkpoint, bad data, missing tools); the message says why."""


class ParityError(ExportError):
    """The fp32 ONNX model disagrees with PyTorch beyond the tolerance (the bundle is written anyway)."""

    exit_code = EXIT_PARITY


@dataclass
class ExportOptions:
    fp16: bool = False
    int8: bool = False
    calib_data: str | None = None
    calib_images: int | None = 256
    calib_method: str = "minmax"
    calib_split: str = "all"
    check_data: str | None = None
    check_split: str = "all"
    check_images: int | None = None
    val_fraction: float = 0.2
    split_seed: int = 42
    opset: int = 17
    trt: bool = False
    max_batch: int = 64
    workspace_mb: int = 4096
    exporter: str = "torchscript"
    tolerance: float = FP32_TOLERANCE
    int8_tool: str = "ort"

    def precisions(self) -> list[str]:
        return [p for p, on in (("fp16", self.fp16), ("int8", self.int8)) if on]


@dataclass
class ExportJob:
    """What the stages share: inputs, the staging folder, and what each stage produced."""

    options: ExportOptions
    source: dict  # checkpoint fields: kind, preprocessing, config, score, val_metrics, epoch, path
    model: object
    prep: Preprocessing
    folder: str = ""
    folded: object = None
    checks: CheckSet | None = None
    calib_items: list | None = None
    fp32_path: str = ""
    outputs: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)  # form -> Scores
    details: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    engines: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    fold_diff: float | None = None


def library_versions(extra=()) -> dict:
    from importlib import metadata

    out = {}
    for dist, key in [("icrt", "icrt"), ("torch", "torch"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                      ("timm", "timm"), ("open_clip_torch", "open_clip"), *extra]:
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def load_source(checkpoint: str):
    """(checkpoint dict, rebuilt model); ExportError naming the file when it cannot be used."""
    from train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

    try:
        ckpt = load_checkpoint(checkpoint)
        model = model_from_checkpoint(ckpt)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    except (ValueError, KeyError, RuntimeError, TypeError) as e:  # unknown kind, mismatched weights
        raise ExportError(f"{checkpoint}: cannot rebuild the model ({type(e).__name__}: {e})") from None
    return {**ckpt, "path": os.path.abspath(checkpoint)}, model


def _model_name(src: dict) -> str:
    cfg = src.get("config") or {}
    return f"{src['kind']}-{cfg['backbone']}" if isinstance(cfg, dict) and cfg.get("backbone") else src["kind"]


def _figures(ref: np.ndarray, scores: np.ndarray, labels) -> dict:
    from train.metrics import agreement, label_agreement

    d = agreement(ref, scores)
    if labels is not None:
        d.update(label_agreement(scores, labels))
    return d


def _check_options(o: ExportOptions) -> None:
    from .precisions import get_precision

    for p in o.precisions():
        get_precision(p)
    if o.int8 and not o.calib_data:
        raise ExportError("--int8 needs --calib-data (images to calibrate on)")
    if o.int8_tool not in ("ort", "modelopt"):
        raise ExportError(f"unknown --int8-tool {o.int8_tool!r} (ort|modelopt)")
    if o.int8 and o.int8_tool == "modelopt":
        from calibration import modelopt

        if not modelopt.available():
            raise ExportError("--int8-tool modelopt needs NVIDIA ModelOpt: pip install 'icrt[modelopt]'")


# --- stages -----------------------------------------------------------------------------------------
def stage_fold(job: ExportJob) -> None:
    from . import fold as folding

    kind = job.source["kind"]
    job.folded = folding.fold_for_export(job.model, kind)
    projection = job.source.get("projection") or {}
    job.params = {"before_folding": folding.count_parameters(job.model) + int(sum(v.numel() for v in projection.values())),
                  "after_folding": folding.count_parameters(job.folded),
                  "folded_constants": folding.count_constants(job.folded)}
    log.info(f"{job.source.get('path', 'model')}: {kind}, parameters {job.params['before_folding'] / 1e6:.2f} M "
             f"before folding, {job.params['after_folding'] / 1e6:.2f} M after")


def stage_check_set(job: ExportJob) -> None:
    """Check images: --check-data, else the calibration images, else generated ones."""
    from calibration.images import choose, read_images

    o = job.options
    if o.calib_data:
        job.calib_items = choose(read_images(o.calib_data, o.calib_split, o.val_fraction, o.split_seed),
                                 o.calib_images, seed=0)
    if o.check_data:
        items = choose(read_images(o.check_data, o.check_split, o.val_fraction, o.split_seed), o.check_images, seed=1)
        job.checks = check_set_from_paths(items, job.prep, f"{data_name(o.check_data)} (split {o.check_split})")
    elif job.calib_items:
        job.checks = check_set_from_paths(job.calib_items, job.prep, f"{data_name(o.calib_data)} (calibration images)")
    else:
        job.checks = check_set_from_images(generated_images(), source="generated")
    log.info(f"check set: {job.checks.n_images} images from {job.checks.source}")


def stage_fp32(job: ExportJob) -> None:
    """The fp32 ONNX file, and PyTorch's scores on the check set (folded model, and the unfolded one)."""
    from train.torch_backend import TorchBackend

    from .onnx_export import export_onnx, opset_of, store_exact_fp16

    job.fp32_path = os.path.join(job.folder, FILES["fp32"])
    job.outputs = export_onnx(job.folded, job.fp32_path, job.prep.size, job.options.opset,
                              exporter=job.options.exporter)
    _compact(job.fp32_path, store_exact_fp16)
    job.options.opset = opset_of(job.fp32_path)
    job.files["fp32"] = {"onnxruntime": FILES["fp32"], "tensorrt": FILES["fp32"]}
    job.scores["pytorch"] = score_check_set(TorchBackend(job.folded), job.checks, job.prep)
    if job.folded is not job.model:
        unfolded = score_check_set(TorchBackend(job.model), job.checks, job.prep)
        job.fold_diff = float(np.abs(unfolded.inputs - job.scores["pytorch"].inputs).max())
    job.scores["fp32"] = _score_file(job, FILES["fp32"], "fp32")


def _score_file(job: ExportJob, name: str, precision: str, simulate_qdq: bool = False) -> Scores:
    from runtime.backends.onnxruntime import OrtBackend

    backend = OrtBackend.from_file(os.path.join(job.folder, name), precision, simulate_qdq=simulate_qdq)
    return score_check_set(backend, job.checks, job.prep)


# How each backend form of a precision is scored on the check set (onnxruntime CPU, this machine): the
# onnxruntime form as `icrt score` runs it; the TensorRT form with its Q/DQ simulated in fp32, the arithmetic
# TensorRT runs (int32 accumulation) rather than this CPU's integer kernels (which add u8 x s8 pairs in 16
# bits on CPUs without VNNI; export/int8.py).
RUN_ON = {"onnxruntime": "onnxruntime CPU kernels", "tensorrt": "onnxruntime CPU, Q/DQ simulated in fp32"}


def _compact(path: str, store_exact_fp16) -> None:
    saved = store_exact_fp16(path)
    if saved:
        log.info(f"{os.path.basename(path)}: {saved / 2**20:.1f} MB of constants that fp16 holds exactly stored as fp16")


def stage_precision(job: ExportJob, name: str) -> None:
    from .onnx_export import store_exact_fp16
    from .precisions import get_precision

    files, details = get_precision(name).build(job)
    for file in set(files.values()):
        _compact(os.path.join(job.folder, file), store_exact_fp16)
    job.files[name] = files
    job.details[name] = details
    for form, file in files.items():  # each distinct file once (fp16 serves both backends with one)
        if form == "onnxruntime":
            job.scores[name] = _score_file(job, file, name)
        elif file != files.get("onnxruntime"):
            job.scores[f"{name}:{form}"] = _score_file(job, file, name, simulate_qdq=form == "tensorrt")


def stage_engines(job: ExportJob) -> None:
    """TensorRT engines for this machine's GPU, built into the staging folder by runtime.engines (the code behind
    ``icrt build``); the manifest written next records them."""
    from runtime.engines import TensorRTError, build_engines

    o = job.options
    try:
        job.engines = build_engines(job.folder, job.files, [p for p in ("fp32", "fp16", "int8") if p in job.files],
                                    INPUT_NAME, job.prep.size, job.scores["fp32"].usual_batch(), o.max_batch,
                                    o.workspace_mb)
    except TensorRTError as e:
        raise ExportError(str(e)) from None


def parity_figures(job: ExportJob) -> dict:
    """fp32 ONNX vs PyTorch (per model input: the gate), every other form vs fp32 ONNX (per image)."""
    from .precisions import get_precision

    labels, o = job.checks.labels, job.options
    torch_s, fp32 = job.scores["pytorch"], job.scores["fp32"]
    diff = float(np.abs(fp32.inputs - torch_s.inputs).max())
    parity = {"fp32": {**_figures(torch_s.images, fp32.images, labels), "reference": "pytorch",
                       "input_max_abs_diff": diff, "tolerance": o.tolerance, "passed": diff <= o.tolerance}}
    from runtime.cpu import describe

    cpu = describe()
    for name in job.files:
        if name == "fp32":
            continue
        target = get_precision(name).target_srcc
        fig = {**_figures(fp32.images, job.scores[name].images, labels), "reference": "fp32 onnx",
               "file": job.files[name]["onnxruntime"], "target_srcc": target, "run_on": RUN_ON["onnxruntime"],
               "cpu": cpu}
        fig["meets_target"] = fig["srcc"] is not None and fig["srcc"] >= target
        for form, file in job.files[name].items():
            if f"{name}:{form}" in job.scores:
                fig[f"{form}_form"] = {**_figures(fp32.images, job.scores[f"{name}:{form}"].images, labels),
                                       "file": file, "run_on": RUN_ON.get(form, RUN_ON["onnxruntime"])}
        parity[name] = fig
    if labels is not None:
        base = parity["fp32"].get("label_srcc")
        for name, fig in parity.items():
            for f in [fig] + [v for k, v in fig.items() if k.endswith("_form")]:
                if name != "fp32" and base is not None and f.get("label_srcc") is not None:
                    f["label_srcc_drop"] = base - f["label_srcc"]
    return parity


def stage_write(job: ExportJob, parity: dict) -> tuple[Manifest, dict]:
    """The manifest (through the manifest module), and the report's content (written after the last stage)."""
    from train.metrics import label_agreement

    src, o = job.source, job.options
    check_info = {"source": job.checks.source, "images": job.checks.n_images,
                  "inputs": int(len(job.scores["fp32"].inputs))}
    manifest = Manifest(
        kind=src["kind"], name=_model_name(src), preprocessing=job.prep, input_name=INPUT_NAME,
        score_output=SCORE_OUTPUT, level_output=LEVELS_OUTPUT if LEVELS_OUTPUT in job.outputs else None,
        score=src.get("score") or dict(DEFAULT_SCORE),
        files=job.files, engines=job.engines, opset=o.opset,
        versions=library_versions([("tensorrt", "tensorrt")] if o.trt else ()),
        parity=parity, calibration=job.calibration,
        model_card={"config": src.get("config") or {}, "check_data": check_info, "val_metrics": src.get("val_metrics"),
                    "epoch": src.get("epoch"), "parameters": job.params,
                    "checkpoint": os.path.basename(src["path"]) if src.get("path") else None},
    )
    manifest.save(job.folder)
    labels = job.checks.labels
    report = {"checkpoint": os.path.basename(src["path"]) if src.get("path") else None, "kind": src["kind"], "parameters": job.params,
              "fold_max_abs_diff": job.fold_diff, "opset": o.opset, "exporter": o.exporter, "files": job.files,
              "fp16": job.details.get("fp16"), "calibration": job.calibration, "check_data": check_info,
              "parity": parity, "engines": job.engines,
              "pytorch_vs_labels": None if labels is None else label_agreement(job.scores["pytorch"].images, labels)}
    return manifest, report


# --- the pipeline -------------------------------------------------------------------------------------
def export_model(model, source: dict, out: str, options: ExportOptions | None = None) -> Manifest:
    """Export a rebuilt model (``source``: its checkpoint fields, at least kind and preprocessing) to ``out``.

    Raises ExportError (or another IcrtError) for unusable inputs and ParityError (after writing the bundle
    and report) when the fp32 ONNX model differs from PyTorch by more than the tolerance. The bundle is built
    in a temporary sibling folder and renamed into place when complete: a failed export leaves an old
    bundle as it was.
    """
    from runtime.staging import bundle_destination, install, staging_folder

    o = options or ExportOptions()
    t0 = time.time()
    _check_options(o)
    final = bundle_destination(out)
    job = ExportJob(o, source, model, Preprocessing.from_dict(source["preprocessing"]))
    stages = Stages()
    stages.run("fold", stage_fold, job)
    stages.run("check set", stage_check_set, job)
    job.folder = staging_folder(final)  # built here, renamed into place when complete
    try:
        stages.run("fp32", stage_fp32, job)
        for name in o.precisions():
            stages.run(name, stage_precision, job, name)
        parity = parity_figures(job)
        if o.trt:
            stages.run("engines", stage_engines, job)
        manifest, report = stages.run("write", stage_write, job, parity)
        report.update(stages=stages.records, seconds=round(time.time() - t0, 1))
        write_json(os.path.join(job.folder, EXPORT_REPORT), report)
        install(job.folder, final)
    except BaseException:
        shutil.rmtree(job.folder, ignore_errors=True)
        raise
    manifest.root = final
    for prec, fig in parity.items():
        log.info(f"{prec}: SRCC vs {fig['reference']} {fig['srcc']}, max |diff| {fig['max_abs_diff']:.3g}, "
                 f"mean |diff| {fig['mean_abs_diff']:.3g}" + (f", label SRCC {fig['label_srcc']:.4f}"
                                                               if fig.get("label_srcc") is not None else ""))
    if not parity["fp32"]["passed"]:
        raise ParityError(f"fp32 ONNX differs from PyTorch by {parity['fp32']['input_max_abs_diff']:.3g} > "
                          f"{o.tolerance:g} (bundle written to {final} for inspection)")
    return manifest


def export_checkpoint(checkpoint: str, out: str, **options) -> Manifest:
    """Export ``checkpoint`` into the bundle folder ``out`` (options: the fields of :class:`ExportOptions`)."""
    o = ExportOptions(**options)
    _check_options(o)  # before the (slow) checkpoint load
    source, model = load_source(checkpoint)
    return export_model(model, source, out, o)
