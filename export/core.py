"""export_checkpoint: checkpoint -> bundle (fp32 ONNX + optional fp16 / int8 / TensorRT) with parity figures."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from runtime.files import write_json
from runtime.manifest import Manifest
from runtime.preprocess import Preprocessing, pool_scores, to_model_input

FP32_TOLERANCE = 1e-4  # max |score difference| onnxruntime fp32 vs PyTorch
TARGETS = {"fp16": {"srcc": 0.999}, "int8": {"srcc": 0.99}}  # agreement targets vs fp32
FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx", "int8_qdq": "model.int8.qdq.onnx"}


class ExportError(RuntimeError):
    """Export cannot proceed (bad checkpoint, bad data, missing tools); the message says why."""


class ParityError(ExportError):
    """The fp32 ONNX model disagrees with PyTorch beyond the tolerance (the bundle is written anyway)."""


@dataclass
class CheckSet:
    """Check images as model inputs: ``inputs`` (N x 3 x S x S), ``owner`` (image index per input)."""
    inputs: np.ndarray
    owner: np.ndarray
    labels: np.ndarray | None
    source: str
    n_images: int

    def pool(self, per_input: np.ndarray, prep: Preprocessing) -> np.ndarray:
        return np.array([pool_scores(per_input[self.owner == i], prep) for i in range(self.n_images)])

    def usual_batch(self) -> int:
        """Median inputs per image: the 'opt' batch of a TensorRT profile."""
        return int(np.median(np.bincount(self.owner))) if len(self.owner) else 1


def generated_images(n: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Synthetic RGB images of graded complexity (share of noisy pixels) and varied aspect ratios."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(48, 160)), int(rng.integers(48, 160))
        img = np.full((h, w, 3), rng.integers(64, 192), np.uint8)
        mask = rng.random((h, w)) < (i + 0.5) / n
        img[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
        out.append(img)
    return out


def check_set_from_images(images, prep: Preprocessing, labels=None, source: str = "") -> CheckSet:
    xs, owner = [], []
    for i, img in enumerate(images):
        x, _ = to_model_input(img, prep)
        xs.append(x)
        owner += [i] * len(x)
    lab = None if labels is None or any(v is None for v in labels) else np.asarray(labels, np.float64)
    return CheckSet(np.concatenate(xs), np.asarray(owner), lab, source, len(images))


def check_set_from_paths(items, prep: Preprocessing, source: str) -> CheckSet:
    from runtime.preprocess import load_for_model

    return check_set_from_images([load_for_model(s.path, prep)[0] for s in items], prep, [s.score for s in items], source)


def run_torch(module, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            o = module(torch.from_numpy(inputs[i : i + batch_size]))
            outs.append((o[0] if isinstance(o, (tuple, list)) else o).float().numpy())
    return np.concatenate(outs).astype(np.float64)


def run_onnx(path: str, inputs: np.ndarray, input_name: str = "image", batch_size: int = 32,
             precision: str = "fp32") -> np.ndarray:
    from runtime.backends.onnxruntime import open_session

    sess = open_session(path, precision)  # the runtime's session settings (fp16: see FP16_DISABLED_OPTIMIZERS)
    outs = [sess.run(["score"], {input_name: inputs[i : i + batch_size]})[0]
            for i in range(0, len(inputs), batch_size)]
    return np.concatenate(outs).astype(np.float64)


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


def _load(checkpoint: str):
    from train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

    try:
        ckpt = load_checkpoint(checkpoint)
        model = model_from_checkpoint(ckpt)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    except (ValueError, KeyError, RuntimeError, TypeError) as e:  # unknown kind, mismatched weights
        raise ExportError(f"{checkpoint}: cannot rebuild the model ({type(e).__name__}: {e})") from None
    return ckpt, model


def _model_name(ckpt: dict) -> str:
    cfg = ckpt.get("config") or {}
    return f"{ckpt['kind']}-{cfg['backbone']}" if isinstance(cfg, dict) and cfg.get("backbone") else ckpt["kind"]


def _figures(ref: np.ndarray, scores: np.ndarray, labels) -> dict:
    from calibration.report import agreement, label_agreement

    d = agreement(ref, scores)
    if labels is not None:
        d.update(label_agreement(scores, labels))
    return d


def label_agreement_or_none(scores, labels):
    from calibration.report import label_agreement

    return None if labels is None else label_agreement(scores, labels)


def _bundle_destination(out: str) -> str:
    """The folder the bundle will replace (a link to a folder: the folder); ExportError if it cannot be one."""
    target = os.path.realpath(out) if os.path.islink(out) else out
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ExportError(f"--out {out}: exists and is not a folder")
    if os.path.isdir(target) and os.listdir(target) and not os.path.isfile(os.path.join(target, "manifest.json")):
        raise ExportError(f"--out {out}: folder exists and is not a bundle (no manifest.json); "
                          "it would be replaced: choose a new or empty folder")
    return target


def _staging_folder(final: str) -> str:
    """A new, empty temporary sibling of ``final`` (same file system: the bundle is renamed into place)."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(final))}.tmp-")
    old = os.path.join(final, "timing.cache")  # keep TensorRT's timing cache: later engine builds are faster
    if os.path.isfile(old):
        shutil.copy2(old, work)
    return work


def _install(work: str, final: str) -> None:
    """Rename the finished bundle ``work`` to ``final``; an old bundle there is replaced only now."""
    mode = os.stat(final).st_mode & 0o7777 if os.path.isdir(final) else 0o777 & ~_umask()
    os.chmod(work, mode)  # mkdtemp's own mode is 0700
    if not os.path.isdir(final):
        os.rename(work, final)
        return
    backup = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(final)), prefix=f".{os.path.basename(final)}.old-")
    os.rename(final, backup)  # onto the empty folder mkdtemp made
    try:
        os.rename(work, final)
    except BaseException:
        os.rename(backup, final)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_checkpoint(checkpoint: str, out: str, fp16: bool = False, int8: bool = False, calib_data: str | None = None,
                      calib_images: int | None = 256, calib_method: str = "minmax", calib_split: str = "all",
                      check_data: str | None = None, check_split: str = "all", check_images: int | None = None,
                      val_fraction: float = 0.2, split_seed: int = 42, opset: int = 17, trt: bool = False,
                      max_batch: int = 64, workspace_mb: int = 4096, exporter: str = "torchscript",
                      tolerance: float = FP32_TOLERANCE, int8_tool: str = "ort", log=print) -> Manifest:
    """Export ``checkpoint`` into the bundle folder ``out``; returns its manifest.

    Raises ExportError for unusable inputs and ParityError (after writing the bundle and report) when the
    fp32 ONNX model differs from PyTorch by more than ``tolerance``. The bundle is built in a temporary
    sibling folder and renamed into place when complete: a failed export leaves an old bundle as it was.
    """
    from calibration.images import CalibrationDataError, choose, read_images

    from . import fold as folding
    from .onnx_export import export_onnx, opset_of

    t0 = time.time()
    if int8 and not calib_data:
        raise ExportError("--int8 needs --calib-data (images to calibrate on)")
    if int8_tool not in ("ort", "modelopt"):
        raise ExportError(f"unknown --int8-tool {int8_tool!r} (ort|modelopt)")
    if int8 and int8_tool == "modelopt":
        from calibration import modelopt

        if not modelopt.available():
            raise ExportError("--int8-tool modelopt needs NVIDIA ModelOpt: pip install 'icrt[modelopt]'")
    final = _bundle_destination(out)
    ckpt, model = _load(checkpoint)
    prep = Preprocessing.from_dict(ckpt["preprocessing"])
    kind = ckpt["kind"]
    folded = folding.fold_for_export(model, kind)
    projection = ckpt.get("projection") or {}
    params = {"before_folding": folding.count_parameters(model) + int(sum(v.numel() for v in projection.values())),
              "after_folding": folding.count_parameters(folded), "folded_constants": folding.count_constants(folded)}
    log(f"{checkpoint}: {kind}, parameters {params['before_folding'] / 1e6:.2f} M before folding, "
        f"{params['after_folding'] / 1e6:.2f} M after")

    # check images: --check-data, else the calibration images, else generated ones
    try:
        calib_items = None
        if calib_data:
            calib_items = choose(read_images(calib_data, calib_split, val_fraction, split_seed), calib_images, seed=0)
        if check_data:
            items = choose(read_images(check_data, check_split, val_fraction, split_seed), check_images, seed=1)
            checks = check_set_from_paths(items, prep, f"{check_data} (split {check_split})")
        elif calib_items:
            checks = check_set_from_paths(calib_items, prep, f"{calib_data} (calibration images)")
        else:
            checks = check_set_from_images(generated_images(), prep, source="generated")
    except (CalibrationDataError, ValueError) as e:
        raise ExportError(str(e)) from None
    log(f"check set: {checks.n_images} images, {len(checks.inputs)} inputs from {checks.source}")

    out = _staging_folder(final)  # built here, renamed into place when complete
    try:
        fp32_path = os.path.join(out, FILES["fp32"])
        outputs = export_onnx(folded, fp32_path, prep.size, opset, exporter=exporter)
        opset = opset_of(fp32_path)

        torch_scores = run_torch(folded, checks.inputs)
        fold_diff = None
        if folded is not model:
            fold_diff = float(np.abs(run_torch(model, checks.inputs) - torch_scores).max())
        per_input = {"fp32": run_onnx(fp32_path, checks.inputs)}
        files = {"fp32": {"onnxruntime": FILES["fp32"], "tensorrt": FILES["fp32"]}}
        details = {}

        if fp16:
            from .fp16 import convert_fp16

            details["fp16"] = convert_fp16(fp32_path, os.path.join(out, FILES["fp16"]))
            files["fp16"] = {"onnxruntime": FILES["fp16"], "tensorrt": FILES["fp16"]}
            per_input["fp16"] = run_onnx(os.path.join(out, FILES["fp16"]), checks.inputs, precision="fp16")

        calibration = {}
        if int8:
            import onnx

            from calibration.reader import PreprocessedImageReader, load_inputs

            from .fp16 import tail_nodes
            from .int8 import quantize_both

            try:
                calib_x = load_inputs([s.path for s in calib_items], prep)
            except ValueError as e:
                raise ExportError(f"calibration: {e}") from None
            reader = PreprocessedImageReader(calib_x, "image")
            forms = quantize_both(fp32_path, out, reader, calib_method, exclude_nodes=tail_nodes(onnx.load(fp32_path)),
                                  names={"onnxruntime": FILES["int8"], "tensorrt": FILES["int8_qdq"]})
            if int8_tool == "modelopt":  # the TensorRT form from ModelOpt instead (optional extra, see calibration/)
                from calibration.modelopt import quantize_tensorrt_form

                forms["tensorrt"] = {**quantize_tensorrt_form(fp32_path, os.path.join(out, FILES["int8_qdq"]), calib_x,
                                                              calib_method, "image"), "file": FILES["int8_qdq"]}
            files["int8"] = {"onnxruntime": FILES["int8"], "tensorrt": FILES["int8_qdq"]}
            calibration = {"method": calib_method, "images": len(calib_items), "inputs": int(len(calib_x)),
                           "data": os.path.abspath(calib_data), "split": calib_split,
                           "split_rule": {"val_fraction": val_fraction, "seed": split_seed, "stratify": True}
                           if calib_split != "all" else None,
                           "tool": "onnxruntime.quantization.quantize_static", "forms": forms}
            per_input["int8"] = run_onnx(os.path.join(out, FILES["int8"]), checks.inputs)
            per_input["int8_qdq"] = run_onnx(os.path.join(out, FILES["int8_qdq"]), checks.inputs)

        # agreement: per input vs PyTorch (fp32 gate) and per image vs fp32 ONNX (all precisions)
        fp32_diff = float(np.abs(per_input["fp32"] - torch_scores).max())
        image_scores = {k: checks.pool(v, prep) for k, v in per_input.items()}
        torch_images = checks.pool(torch_scores, prep)
        parity = {"fp32": {**_figures(torch_images, image_scores["fp32"], checks.labels), "reference": "pytorch",
                           "input_max_abs_diff": fp32_diff, "tolerance": tolerance, "passed": fp32_diff <= tolerance}}
        for prec, file_key in [("fp16", "fp16"), ("int8", "int8")]:
            if prec not in image_scores:
                continue
            fig = {**_figures(image_scores["fp32"], image_scores[file_key], checks.labels), "reference": "fp32 onnx",
                   "file": FILES[file_key], "target_srcc": TARGETS[prec]["srcc"]}
            fig["meets_target"] = fig["srcc"] is not None and fig["srcc"] >= TARGETS[prec]["srcc"]
            if prec == "int8":
                fig["tensorrt_form"] = {**_figures(image_scores["fp32"], image_scores["int8_qdq"], checks.labels),
                                        "file": FILES["int8_qdq"], "run_on": "onnxruntime CPU"}
            parity[prec] = fig
        pytorch_labels = label_agreement_or_none(torch_images, checks.labels)
        if checks.labels is not None:
            for prec in ("fp16", "int8"):
                if prec in parity and parity[prec].get("label_srcc") is not None:
                    parity[prec]["label_srcc_drop"] = parity["fp32"]["label_srcc"] - parity[prec]["label_srcc"]
            if "int8" in parity and parity["int8"]["tensorrt_form"].get("label_srcc") is not None:
                t = parity["int8"]["tensorrt_form"]
                t["label_srcc_drop"] = parity["fp32"]["label_srcc"] - t["label_srcc"]
        check_info = {"source": checks.source, "images": checks.n_images, "inputs": int(len(checks.inputs))}

        engines = []
        if trt:
            from .tensorrt import TensorRTError, build_engines

            try:
                engines = build_engines(out, files, [p for p in ("fp32", "fp16", "int8") if p in files], "image",
                                        prep.size, checks.usual_batch(), max_batch, workspace_mb)
            except TensorRTError as e:
                raise ExportError(str(e)) from None

        cfg = ckpt.get("config") or {}
        manifest = Manifest(
            kind=kind, name=_model_name(ckpt), preprocessing=prep, input_name="image", score_output="score",
            level_output="levels" if "levels" in outputs else None,
            score=ckpt.get("score") or {"range": [0.0, 1.0], "meaning": "higher = more complex"},
            files=files, engines=engines, opset=opset,
            versions=library_versions([("tensorrt", "tensorrt")] if trt else ()),
            parity=parity, calibration=calibration,
            model_card={"config": cfg, "check_data": check_info, "val_metrics": ckpt.get("val_metrics"),
                        "epoch": ckpt.get("epoch"), "parameters": params, "checkpoint": os.path.abspath(checkpoint)},
        )
        manifest.save(out)
        report = {"checkpoint": os.path.abspath(checkpoint), "kind": kind, "parameters": params,
                  "fold_max_abs_diff": fold_diff, "opset": opset, "exporter": exporter, "files": files,
                  "fp16": details.get("fp16"), "calibration": calibration, "check_data": check_info,
                  "parity": parity, "pytorch_vs_labels": pytorch_labels, "engines": engines,
                  "seconds": round(time.time() - t0, 1)}
        write_json(os.path.join(out, "export-report.json"), report)
        _install(out, final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    manifest.root = final
    for prec, fig in parity.items():
        log(f"{prec}: SRCC vs {fig['reference']} {fig['srcc']}, max |diff| {fig['max_abs_diff']:.3g}, "
            f"mean |diff| {fig['mean_abs_diff']:.3g}" + (f", label SRCC {fig['label_srcc']:.4f}"
                                                          if fig.get("label_srcc") is not None else ""))
    if not parity["fp32"]["passed"]:
        raise ParityError(f"fp32 ONNX differs from PyTorch by {fp32_diff:.3g} > {tolerance:g} "
                          f"(bundle written to {final} for inspection)")
    return manifest
