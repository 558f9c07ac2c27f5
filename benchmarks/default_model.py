"""Recipe of the bundled default model: D2S on Savoias, from scratch, with the project's own CLIs.

    python -m benchmarks.default_model --data ../shared/data/savoias/labels.csv --work runs/default [--select]

Steps (seeded; every number this prints is measured, nothing is tuned on the held-out part):
1. Split Savoias into a category-stratified 80% (development) and 20% (held out; only reported on), seed 42.
2. ``--select``: model selection inside the 80%: each candidate is trained with ``python -m train d2s`` on a
   further seeded stratified 80/20 split of the development part and judged by its inner-validation SRCC.
3. The chosen candidate is retrained on the whole development part (``--val-fraction 0``, same epochs).
4. ``python -m train.evaluate`` and ``python -m export --int8`` (calibrated on development images only);
   every precision is scored on the held-out images by the runtime itself.
5. The model card (data, licence, recipe, figures, limits) goes into the manifest; ``--install`` copies the
   bundle to ``runtime/default_bundle/``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

CANDIDATES = {
    # name: extra `python -m train d2s` arguments (common: --pretrained none --text none --seed 42)
    "regnetx002-256-cues": ["--backbone", "regnetx_002", "--image-size", "256", "--epochs", "12", "--cues"],
    "regnetx002-256": ["--backbone", "regnetx_002", "--image-size", "256", "--epochs", "12"],
}
DEFAULT = "regnetx002-256-cues"
COMMON = ["--pretrained", "none", "--text", "none", "--seed", "42"]
PACKAGE_BUNDLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime", "default_bundle")


def run(cmd: list[str], log) -> None:
    log(f"$ {' '.join(cmd)}")
    t0 = time.time()
    subprocess.run(cmd, check=True)
    log(f"  ({time.time() - t0:.0f} s)")


def write_split(data: str, work: str) -> tuple[str, str]:
    from train.data import load_samples, split_train_val

    dev, held = split_train_val(load_samples(data), 0.2, seed=42, stratify=True)
    paths = []
    for name, samples in (("development", dev), ("heldout", held)):
        path = os.path.join(work, f"{name}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "score", "category"])
            for s in samples:
                w.writerow([s.image, s.score, s.category])
        paths.append(path)
    return paths[0], paths[1]


def heldout_figures(bundle: str, heldout_csv: str) -> dict:
    """Score the held-out images with the runtime in each precision; pooled and per-category figures."""
    from runtime import Scorer
    from train import metrics
    from train.data import read_labels_csv

    samples = read_labels_csv(heldout_csv)
    out = {}
    for precision in ("fp32", "int8"):
        scorer = Scorer.load(bundle, backend="onnxruntime", precision=precision)
        recs = list(scorer.score_many([s.image for s in samples]))
        rep = metrics.report([r["score"] for r in recs], [s.score for s in samples], [s.category for s in samples])
        out[precision] = {
            "srcc": round(rep["srcc"], 4), "plcc": round(rep["plcc"], 4),
            "mean_category_srcc": round(rep["mean_category_srcc"], 4),
            "mean_category_plcc": round(rep["mean_category_plcc"], 4),
            "per_category": {c: {"srcc": round(m["srcc"], 4), "plcc": round(m["plcc"], 4), "n": m["n"]}
                             for c, m in rep["per_category"].items()},
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.default_model", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/savoias/labels.csv")
    p.add_argument("--work", default="runs/default")
    p.add_argument("--select", action="store_true", help="run model selection (inner split) before the final fit")
    p.add_argument("--candidate", default=DEFAULT, choices=sorted(CANDIDATES), help="used without --select")
    p.add_argument("--install", action="store_true", help="copy the bundle to runtime/default_bundle/")
    p.add_argument("--reuse-final", action="store_true",
                   help="keep WORK/final/checkpoint.pt if it exists (re-export and re-measure only)")
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    t_start = time.time()
    dev_csv, held_csv = write_split(args.data, args.work)
    py = sys.executable
    selection = {}
    chosen = args.candidate
    if args.select:
        for name, extra in CANDIDATES.items():
            out = os.path.join(args.work, "select", name)
            run([py, "-m", "train", "d2s", "--data", dev_csv, "--out", out, *COMMON, *extra], log)
            with open(os.path.join(out, "metrics.json")) as f:
                m = json.load(f)
            selection[name] = {"inner_val_srcc": round(m["srcc"], 4), "inner_val_mean_category_srcc":
                               round(m["mean_category_srcc"], 4), "best_epoch": m["epoch"]}
            log(f"  {name}: inner-validation SRCC {m['srcc']:.4f} (per-category mean {m['mean_category_srcc']:.4f})")
        chosen = max(selection, key=lambda n: selection[n]["inner_val_srcc"])
        log(f"chosen: {chosen}")
    final = os.path.join(args.work, "final")
    timing = os.path.join(final, "train-seconds.json")
    if args.reuse_final and os.path.isfile(os.path.join(final, "checkpoint.pt")):
        log(f"reusing {final}/checkpoint.pt")
    else:
        t0 = time.time()
        run([py, "-m", "train", "d2s", "--data", dev_csv, "--out", final, "--val-fraction", "0", *COMMON,
             *CANDIDATES[chosen]], log)
        with open(timing, "w") as f:
            json.dump({"seconds": round(time.time() - t0)}, f)
    train_minutes = json.load(open(timing))["seconds"] / 60 if os.path.isfile(timing) else float("nan")
    run([py, "-m", "train.evaluate", "--checkpoint", os.path.join(final, "checkpoint.pt"), "--data", held_csv,
         "--out", os.path.join(args.work, "heldout-pytorch.json")], log)
    bundle = os.path.join(args.work, "bundle")
    if os.path.isdir(bundle):
        shutil.rmtree(bundle)
    run([py, "-m", "export", "--checkpoint", os.path.join(final, "checkpoint.pt"), "--out", bundle, "--int8",
         "--calib-data", dev_csv, "--check-data", held_csv], log)
    figures = heldout_figures(bundle, held_csv)
    minutes = (time.time() - t_start) / 60

    from runtime.manifest import load_manifest

    manifest = load_manifest(bundle)
    manifest.name = "icrt-default-d2s-regnetx002"
    manifest.model_card["checkpoint"] = "final/checkpoint.pt in the recipe's work folder (not shipped)"
    manifest.model_card["check_data"] = {"source": "the held-out 20% (heldout.csv)", "images": len(open(held_csv).readlines()) - 1}
    manifest.model_card.update({
        "summary": "D2S-style complexity scorer (RegNetX-200MF + attention pooling + low-level cues), "
                   "trained from scratch on Savoias by icrt.",
        "training_data": "Savoias (Saraee, Jalal, Betke; arXiv:1810.01771), 905 of the 1,132 images of the "
                         "project's copy (seeded, category-stratified 80%); Apache License 2.0.",
        "licence": "model weights: Apache-2.0 (as the training data)",
        "recipe": f"python -m benchmarks.default_model --data PATH/savoias/labels.csv {'--select ' if args.select else ''}"
                  f"--install  (candidate {chosen}: {' '.join(COMMON + CANDIDATES[chosen])}); final training "
                  f"{train_minutes:.0f} min, export and measurement {minutes:.0f} min, on a 2-core CPU",
        "selection": selection or "not re-run (see docs/default_model.md)",
        "heldout": {"images": 227, "split": "seeded (42) category-stratified 20% of the project's Savoias copy",
                    **figures},
        "score_meaning": "0 = simple, 1 = complex; Savoias scores are comparable only within a category",
        "limits": "Not trained on IC9600. Accuracy on other domains is unknown. Trained from scratch on 905 images.",
    })
    manifest.save()
    with open(os.path.join(args.work, "recipe-log.txt"), "w") as f:
        f.write("\n".join(log_lines) + "\n")
    log(json.dumps(figures, indent=1))
    log(f"total {minutes:.1f} min")
    if args.install:
        if os.path.isdir(PACKAGE_BUNDLE):
            shutil.rmtree(PACKAGE_BUNDLE)
        shutil.copytree(bundle, PACKAGE_BUNDLE, ignore=shutil.ignore_patterns("*.fp16.onnx", "*.plan", "timing.cache"))
        log(f"installed to {PACKAGE_BUNDLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
