"""export_checkpoint: checkpoint -> bundle (fp32 ONNX + optional fp16 / int8 / TensorRT) with parity figures.

The pipeline is a list of stages run by :class:`export.stages.Stages` (timed, reported the same way), each a
function with explicit inputs and outputs: ``fold`` -> :class:`Folded`, ``check set`` -> :class:`CheckImages`,
``fp32`` -> :class:`Fp32`, one stage per extra precision (its declared builder, ``export.precisions``) ->
:class:`PrecisionFiles`, ``parity`` -> figures, ``engines`` (``--trt``) -> engine records, ``write`` -> the manifest
and the report. Every form is scored on the check images through the runtime's Scorer, as ``icrt score`` would
score them.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from icrt.export.checks import (
    CheckSet,
    Scores,
    check_set_from_images,
    check_set_from_paths,
    data_name,
    generated_images,
    refuse_unusable,
    score_check_set,
)
from icrt.export.errors import ExportError, ParityError, PrecisionRefused
from icrt.export.options import ExportOptions, check
from icrt.export.parity import parity_figures
from icrt.export.stages import Stages
from icrt.runtime.base.files import write_json
from icrt.runtime.bundle.manifest import (
    DEFAULT_SCORE,
    EXPORT_REPORT,
    INPUT_NAME,
    LEVELS_OUTPUT,
    SCORE_OUTPUT,
    Calibration,
    Manifest,
    ModelCard,
    ParityFigures,
    ScoreSpec,
)
from icrt.runtime.bundle.precisions import get_precision, precision_names
from icrt.runtime.bundle.preprocessing import Preprocessing

log = logging.getLogger("export")

__all__ = ["ExportError", "ExportOptions", "ParityError", "export_checkpoint", "export_model", "load_source"]


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
    from icrt.train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

    try:
        ckpt = load_checkpoint(checkpoint)
        model = model_from_checkpoint(ckpt)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    except (ValueError, KeyError, RuntimeError, TypeError) as e:  # unknown kind, mismatched weights
        raise ExportError(f"{checkpoint}: cannot rebuild the model ({type(e).__name__}: {e})") from None
    return {**ckpt, "path": os.path.abspath(checkpoint)}, model


def _checkpoint_name(src: dict) -> str | None:
    """The checkpoint as a bundle records it: its file name, never a path of the exporting machine."""
    return os.path.basename(src["path"]) if src.get("path") else None


def _model_name(src: dict) -> str:
    cfg = src.get("config") or {}
    return f"{src['kind']}-{cfg['backbone']}" if isinstance(cfg, dict) and cfg.get("backbone") else src["kind"]


CARD_MAX_BYTES = 1 << 20


def read_card(path: str | None) -> dict:
    """The ``--card`` file: a JSON object of text a person reads (summary, training_data, licence, limits, ...);
    ExportError naming the file when it is not one."""
    if not path:
        return {}
    import json

    try:
        with open(path, "rb") as f:
            data = f.read(CARD_MAX_BYTES + 1)
        if len(data) > CARD_MAX_BYTES:
            raise ExportError(f"--card {path}: larger than {CARD_MAX_BYTES >> 20} MB; a model card is text")
        card = json.loads(data.decode("utf-8"))
    except OSError as e:
        raise ExportError(f"--card {path}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:
        raise ExportError(f"--card {path}: not a JSON object ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(card, dict) or not card:
        raise ExportError(f"--card {path}: must be a JSON object of card fields (summary, training_data, licence, "
                          "limits, ...)")
    return card


# --- stages ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Folded:
    module: object  # the image -> score[, levels] module to export
    params: dict  # parameter counts before and after folding, folded constants


@dataclass(frozen=True)
class CheckImages:
    checks: CheckSet  # what every form is scored on
    calib_items: list | None  # the calibration images (--calib-data)


@dataclass(frozen=True)
class Fp32:
    path: str  # model.onnx in the staging folder
    outputs: list  # its output names
    opset: int
    torch: Scores  # PyTorch's scores (the folded model)
    onnx: Scores  # the fp32 ONNX file's scores (onnxruntime CPU)
    fold_diff: float | None  # |folded - unfolded| per model input, when folding changed the module


@dataclass(frozen=True)
class PrecisionFiles:
    files: dict  # backend form -> file name
    scores: dict  # backend form -> Scores, for each distinct file
    details: dict
    calibration: dict | None
    run_on: str | None = None  # how the onnxruntime form was run for its parity (None: onnxruntime CPU)


def stage_fold(model, source: dict) -> Folded:
    import icrt.export.fold as folding

    kind = source["kind"]
    folded = folding.fold_for_export(model, kind)
    projection = source.get("projection") or {}
    params = {"before_folding": folding.count_parameters(model) + int(sum(v.numel() for v in projection.values())),
              "after_folding": folding.count_parameters(folded), "folded_constants": folding.count_constants(folded)}
    log.info(f"{source.get('path', 'model')}: {kind}, parameters {params['before_folding'] / 1e6:.2f} M "
             f"before folding, {params['after_folding'] / 1e6:.2f} M after")
    return Folded(folded, params)


def stage_check_set(o: ExportOptions, prep: Preprocessing) -> CheckImages:
    """Check images: --check-data, else the calibration images, else generated ones."""
    from icrt.export.images import choose, read_images

    calib = None
    if o.calib_data:
        calib = choose(read_images(o.calib_data, o.calib_split, o.val_fraction, o.split_seed), o.calib_images, seed=0)
    if o.check_data:
        items = choose(read_images(o.check_data, o.check_split, o.val_fraction, o.split_seed), o.check_images, seed=1)
        checks = check_set_from_paths(items, prep, f"{data_name(o.check_data)} (split {o.check_split})")
    elif calib:
        checks = check_set_from_paths(calib, prep, f"{data_name(o.calib_data)} (calibration images)")
    else:
        checks = check_set_from_images(generated_images(), source="generated")
    log.info(f"check set: {checks.n_images} images from {checks.source}")
    return CheckImages(checks, calib)


def _score_file(folder: str, name: str, precision: str, checks: CheckSet, prep: Preprocessing,
                simulate_qdq: bool = False) -> Scores:
    from icrt.runtime.backends.onnxruntime import OrtBackend

    backend = OrtBackend.from_file(os.path.join(folder, name), precision, simulate_qdq=simulate_qdq)
    scores = score_check_set(backend, checks, prep)
    # a form whose arithmetic overflows (the PyTorch model's scores were finite); SRCC vs fp32 judges the rest
    refuse_unusable(scores, checks, name, varies=False, why="its arithmetic overflows")
    return scores


def _compact(path: str) -> None:
    """Large constants that int8 codes or fp16 hold exactly stored so (lossless; ``export.onnx_export.store_exact``)."""
    from icrt.export.onnx_export import store_exact

    saved = store_exact(path)
    if saved:
        log.info(f"{os.path.basename(path)}: {saved / 2**20:.1f} MB saved by storing exactly held constants as int8 or fp16")


def stage_fp32(folded: Folded, model, checks: CheckSet, prep: Preprocessing, folder: str, o: ExportOptions) -> Fp32:
    """PyTorch's scores on the check set (folded model, and the unfolded one), and the fp32 ONNX file. A model whose
    scores are not finite, or the same for every check image, stops here, before any file is written."""
    from icrt.export.onnx_export import export_onnx, opset_of
    from icrt.train.torch_backend import TorchBackend

    torch_scores = score_check_set(TorchBackend(folded.module), checks, prep)
    refuse_unusable(torch_scores, checks, "the model")
    name = get_precision("fp32").file()
    path = os.path.join(folder, name)
    outputs = export_onnx(folded.module, path, prep.size, o.opset, exporter=o.exporter)
    _compact(path)
    fold_diff = None
    if folded.module is not model:
        unfolded = score_check_set(TorchBackend(model), checks, prep)
        fold_diff = float(np.abs(unfolded.inputs - torch_scores.inputs).max())
    return Fp32(path, outputs, opset_of(path), torch_scores, _score_file(folder, name, "fp32", checks, prep), fold_diff)


def stage_precision(name: str, fp32: Fp32, images: CheckImages, kind: str, prep: Preprocessing, folder: str,
                    o: ExportOptions) -> PrecisionFiles:
    """The files of precision ``name`` (its declared builder), each distinct file scored on the check set."""
    from icrt.export.builders import build
    from icrt.export.precisions import BuildInput

    built = build(name, BuildInput(fp32.path, folder, kind, prep, o, images.calib_items))
    for file in set(built.files.values()):  # the fp32 file (bf16's) was compacted by stage_fp32
        path = os.path.join(folder, file)
        if os.path.abspath(path) != os.path.abspath(fp32.path):
            _compact(path)
    scores = {}
    if built.open:  # one file (the fp32 one) computed in this precision by the builder's backend (bf16: OpenVINO)
        backend, run_on = built.open(os.path.join(folder, built.files["onnxruntime"]))
        scores["onnxruntime"] = score_check_set(backend, images.checks, prep)
        return PrecisionFiles(built.files, scores, built.details, built.calibration, run_on=run_on)
    for form, file in built.files.items():  # each distinct file once (fp16 serves both backends with one)
        if form == "onnxruntime" or file != built.files.get("onnxruntime"):
            # the TensorRT form with its Q/DQ simulated in fp32: the arithmetic TensorRT runs (export/parity.py)
            scores[form] = _score_file(folder, file, name, images.checks, prep, simulate_qdq=form == "tensorrt")
    return PrecisionFiles(built.files, scores, built.details, built.calibration)


def stage_parity(fp32: Fp32, results: dict, images: CheckImages, o: ExportOptions) -> dict:
    return parity_figures(fp32.torch, fp32.onnx, {k: (r.files, r.scores, r.run_on) for k, r in results.items()},
                          images.checks, o.tolerance)


def stage_engines(folder: str, files: dict, prep: Preprocessing, fp32: Fp32, o: ExportOptions) -> list:
    """TensorRT engines for this machine's GPU, built into the staging folder by runtime.backends.tensorrt_build
    (the code behind ``icrt build``); the manifest written next records them."""
    from icrt.runtime.backends.tensorrt_build import TensorRTError, build_engines

    try:
        return build_engines(folder, files, [p for p in precision_names() if p in files], INPUT_NAME, prep.size,
                             fp32.onnx.usual_batch(), o.max_batch, o.workspace_mb)
    except TensorRTError as e:
        raise ExportError(str(e)) from None


def stage_write(source: dict, prep: Preprocessing, folded: Folded, images: CheckImages, fp32: Fp32, files: dict,
                results: dict, parity: dict, engines: list, folder: str, o: ExportOptions) -> tuple[Manifest, dict]:
    """The manifest (through the manifest module), and the report's content (written after the last stage)."""
    from icrt.train.metrics import label_agreement

    checks = images.checks
    check_info = {"source": checks.source, "images": checks.n_images, "inputs": int(len(fp32.onnx.inputs))}
    calibration = next((r.calibration for r in results.values() if r.calibration), None) or {}
    manifest = Manifest(
        kind=source["kind"], name=o.name or _model_name(source), preprocessing=prep, input_name=INPUT_NAME,
        score_output=SCORE_OUTPUT, level_output=LEVELS_OUTPUT if LEVELS_OUTPUT in fp32.outputs else None,
        score=ScoreSpec.from_dict(source.get("score") or DEFAULT_SCORE), files=files, engines=list(engines),
        opset=fp32.opset, versions=library_versions([("tensorrt", "tensorrt")] if o.trt else ()),
        parity={k: ParityFigures.from_dict(v, f"parity.{k}") for k, v in parity.items()},
        calibration=Calibration.from_dict(calibration),
        model_card=ModelCard(config=source.get("config") or {}, check_data=check_info,
                             val_metrics=source.get("val_metrics"), epoch=source.get("epoch"), parameters=folded.params,
                             checkpoint=_checkpoint_name(source)),
    )
    manifest.model_card.update(read_card(o.card))
    if o.version:
        manifest.version = o.version
    manifest.root = folder
    manifest.record_checksums()
    manifest.save(folder)
    labels = checks.labels
    report = {"checkpoint": _checkpoint_name(source), "kind": source["kind"], "parameters": folded.params,
              "fold_max_abs_diff": fp32.fold_diff, "opset": fp32.opset, "exporter": o.exporter, "files": files,
              "built": {name: r.details for name, r in results.items()}, "calibration": calibration,
              "check_data": check_info, "parity": parity,
              "engines": [e.to_dict() for e in engines],
              "pytorch_vs_labels": None if labels is None else label_agreement(fp32.torch.images, labels)}
    return manifest, report


# --- the pipeline ---------------------------------------------------------------------------------------------------


def export_model(model, source: dict, out: str, options: ExportOptions | None = None) -> Manifest:
    """Export a rebuilt model (``source``: its checkpoint fields, at least kind and preprocessing) to ``out``.

    Raises ExportError (or another IcrtError) for unusable inputs and ParityError (after writing the bundle
    and report) when the fp32 ONNX model differs from PyTorch by more than the tolerance. The bundle is built
    in a temporary sibling folder and renamed into place when complete: a failed export leaves an old
    bundle as it was.
    """
    from icrt.runtime.bundle.staging import bundle_destination, install, staging_folder

    o = options or ExportOptions()
    t0 = time.time()
    check(o)
    read_card(o.card)  # a bad card stops the export before anything slow
    final = bundle_destination(out)
    prep = Preprocessing.from_dict(source["preprocessing"])
    stages = Stages()
    folded = stages.run("fold", stage_fold, model, source)
    images = stages.run("check set", stage_check_set, o, prep)
    folder = staging_folder(final)  # built here, renamed into place when complete
    try:
        fp32 = stages.run("fp32", stage_fp32, folded, model, images.checks, prep, folder, o)
        files = {"fp32": dict(get_precision("fp32").files)}
        results, refused = {}, {}
        for name in o.precisions():
            try:
                results[name] = stages.run(name, stage_precision, name, fp32, images, source["kind"], prep, folder, o)
            except PrecisionRefused as e:  # said, recorded in the report, and the rest is written
                log.warning(f"export: warning: {e}")
                refused[name] = str(e)
                continue
            files[name] = results[name].files
        parity = stages.run("parity", stage_parity, fp32, results, images, o)
        engines = stages.run("engines", stage_engines, folder, files, prep, fp32, o) if o.trt else []
        manifest, report = stages.run("write", stage_write, source, prep, folded, images, fp32, files, results,
                                      parity, engines, folder, o)
        report.update(stages=stages.records, seconds=round(time.time() - t0, 1))
        if refused:
            report["not_offered"] = refused
        write_json(os.path.join(folder, EXPORT_REPORT), report)
        install(folder, final)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
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


def export_checkpoint(checkpoint: str, out: str, options: ExportOptions | None = None, **fields) -> Manifest:
    """Export ``checkpoint`` into the bundle folder ``out`` (``options``, or its fields as keywords:
    ``fp16=True, int8=True, calib_data=...``)."""
    try:
        o = options or ExportOptions(**fields)
    except TypeError as e:  # an option export does not have
        raise ExportError(f"export_checkpoint: {e}") from None
    check(o)  # before the (slow) checkpoint load
    read_card(o.card)
    source, model = load_source(checkpoint)
    return export_model(model, source, out, o)
