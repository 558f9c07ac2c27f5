"""End to end on real photos: where the time of `icrt score` goes, and the levers against it, measured in one run.

    python -m benchmarks.e2e_pipeline --images photos/ --today main --json e2e.json

Four parts, each timed in interleaved rounds (every variant once per round, so that the load of a shared machine
falls on all of them alike and their ratios hold):

1. Preprocessing levers, one core, ms per image: decoding alone; today's decode + resize (``load_resized``, the one
   preprocessing of training, evaluation and the runtime); JPEG DCT-domain downscaling (``draft``) to half size
   before the resize; Pillow's ``reducing_gap``. The last two change pixels (see part 4).
2. The Scorer at batch 8 per backend x precision: inference alone (batches of ready inputs) against end to end
   (files -> scores) with decoding on the calling thread (``workers=0``) or decoded ahead on 1 or 2 helper threads
   while the engine runs (``workers``).
3. ``icrt score FOLDER`` as a user runs it, a fresh process each time (start-up included): today's code (``--today``,
   a git revision of this repository, extracted to a temporary folder) against this checkout's default and its
   fastest setting here.
4. With ``--labels`` (a labels.csv such as Savoias'): the held-out SRCC of the bundle's scores with today's pixels
   and with the cheaper decode (``draft`` to half size), on the images the default model never saw (the parity half
   of the held-out 20%, docs/default_model.md): a lever that changes pixels is adopted only if it keeps the
   accuracy.

Every figure is printed with the CPU flags (runtime.base.hardware) and the load average.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from icrt.runtime.tools.bench import rounds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def chains(prep):
    """name -> Preprocessing: the bundle's own, the chain before this turn (full decode, bicubic) and the cheap one
    (JPEG DCT-domain downscaling to a short side >= half the input, bilinear), each run by the runtime's
    ``load_resized`` (the one preprocessing of training, evaluation and the runtime)."""
    import dataclasses

    return {
        "this bundle's preprocessing": prep,
        "full decode, bicubic (before issue 27)": dataclasses.replace(prep, draft=1.0, interpolation="bicubic"),
        "draft 0.5, bilinear (issue 27)": dataclasses.replace(prep, draft=0.5, interpolation="bilinear"),
        "draft 0.5, bicubic": dataclasses.replace(prep, draft=0.5, interpolation="bicubic"),
    }


def preprocessing_levers(paths, prep, n: int) -> list[dict]:
    from icrt.runtime.scoring.preprocess import load_resized

    calls = {k: (lambda q=q: [load_resized(p, q) for p in paths]) for k, q in chains(prep).items()}
    out = [{"lever": k, "ms_per_image": 1000 * float(np.median(v)) / len(paths)} for k, v in rounds(calls, n).items()]
    before = next(r["ms_per_image"] for r in out if r["lever"].startswith("full decode"))
    for r in out:
        r["vs_full_decode_bicubic"] = before / r["ms_per_image"]
    return out


def scorer_variants(manifest, settings, paths, batch: int, n: int, threads) -> list[dict]:
    from icrt.runtime.backends import BackendError, open_backend
    from icrt.runtime.scoring.options import ScorerOptions
    from icrt.runtime.scoring.scorer import Scorer
    from icrt.runtime.tools.bench import _inputs

    calls, meta = {}, {}
    for name, prec in settings:
        try:
            be = open_backend(manifest, ScorerOptions(backend=name, precision=prec, threads=threads))
        except BackendError as e:
            print(f"skipped {name}/{prec}: {e}", file=sys.stderr)
            continue
        pool, per_image = _inputs(manifest, be, paths)
        x = np.ascontiguousarray(np.concatenate([pool] * -(-batch // len(pool)))[:batch])
        key = f"{name} {prec}"
        calls[f"{key} | inference only"] = lambda be=be, x=x: [be.run(x) for _ in range(len(paths) // batch)]
        meta[f"{key} | inference only"] = (key, "inference only", len(paths) // batch * batch / per_image)
        for w in (0, 1, 2):
            s = Scorer(manifest, be, batch_size=batch, workers=w)
            what = "end to end, decode on the calling thread" if w == 0 else f"end to end, {w} decode thread(s)"
            calls[f"{key} | {what}"] = lambda s=s: s.score_many(paths)
            meta[f"{key} | {what}"] = (key, what, len(paths))
    out = []
    for k, v in rounds(calls, n).items():
        setting, what, images = meta[k]
        out.append({"setting": setting, "variant": what, "images_per_s": images / float(np.median(v))})
    for r in out:
        ref = next(x for x in out if x["setting"] == r["setting"] and x["variant"] == "inference only")
        r["vs_inference"] = r["images_per_s"] / ref["images_per_s"]
    return out


def extract(rev: str, tmp: str) -> str:
    """This repository at ``rev``, as files in a temporary folder (git archive: nothing else is touched)."""
    folder = os.path.join(tmp, "today")
    os.makedirs(folder)
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def cli_runs(folder: str, today: str | None, commands: dict, n: int, tmp: str, model: str | None = None) -> list[dict]:
    env = {**os.environ, "ICRT_CACHE_DIR": os.path.join(tmp, "cache")}
    bundle = ["-m", os.path.abspath(model)] if model else []  # else each code's own default model
    runs = {}
    if today:
        code = extract(today, tmp)
        runs[f"today ({today}): icrt score FOLDER"] = (code, ["score", folder, *bundle])
    for extra in commands.values():
        runs[f"this checkout: icrt score FOLDER {extra}".strip()] = (ROOT, ["score", folder, *bundle, *extra.split()])

    def call(cwd, args):
        subprocess.run([sys.executable, "-m", "icrt.runtime.cli", *args, "--format", "json"], cwd=cwd, check=True,
                       env={**env, "PYTHONPATH": cwd}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    count = len([f for f in os.listdir(folder) if not f.startswith(".")])
    times = rounds({k: (lambda c=c, a=a: call(c, a)) for k, (c, a) in runs.items()}, n)
    out = [{"command": k, "images": count, "images_per_s": count / float(np.median(v))} for k, v in times.items()]
    if today:
        for r in out:
            r["vs_today"] = r["images_per_s"] / out[0]["images_per_s"]
    return out


def heldout_srcc(manifest, labels: str, threads) -> list[dict]:
    from icrt.runtime.backends import open_backend
    from icrt.runtime.scoring.options import ScorerOptions
    from icrt.runtime.scoring.scorer import Scorer
    from icrt.runtime.tools.metrics import report
    from icrt.train.data import load_samples, split_train_val

    # the default model's recipe (train/recipes/default_model.py): the shipped model saw every image but the parity
    # half of the held-out 20%, so that half is the held-out set here
    _, held = split_train_val(load_samples(labels), 0.2, seed=42, stratify=True)
    _, parity = split_train_val(held, 0.5, seed=7, stratify=True)
    paths, truth, cats = [s.image for s in parity], [s.score for s in parity], [s.category for s in parity]
    be = open_backend(manifest, ScorerOptions(backend="onnxruntime", precision="fp32", threads=threads))
    out = []
    for what, prep in chains(manifest.preprocessing).items():
        scorer = Scorer.for_preprocessing(be, prep, score_range=manifest.score_range)
        scores = [r.get("score") for r in scorer.score_many(paths)]
        # an image that failed has no score: its truth and category leave with it
        kept = [(s, t, c) for s, t, c in zip(scores, truth, cats) if s is not None]
        rep = report([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept])
        out.append({"decode": what, "images": len(paths), "srcc": rep["srcc"],
                    "mean_category_srcc": rep["mean_category_srcc"]})
    return out


LEVER_COLUMNS = ["lever", "ms_per_image", "vs_full_decode_bicubic"]
HELDOUT_COLUMNS = ["decode", "images", "srcc", "mean_category_srcc"]


def table(rows: list[dict], cols: list[str]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) and abs(v) <= 1 else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="a folder of photos (JPEGs), timed as a whole")
    p.add_argument("-m", "--model", help="bundle (default: the default model)")
    p.add_argument("--backend", default="onnxruntime,openvino", help="backends of part 2, comma-separated")
    p.add_argument("--precisions", default="fp32,int8", help="precisions of part 2, comma-separated")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of each part")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: one per physical core)")
    p.add_argument("--today", help="a git revision whose `icrt score` is part 3's baseline (e.g. main)")
    p.add_argument("--fastest", default="--backend openvino --precision int8",
                   help="part 3: the options of this checkout's fastest `icrt score` here")
    p.add_argument("--labels", help="labels.csv of the images' data set: part 4 (held-out SRCC per decode)")
    p.add_argument("--skip", default="", help="parts to leave out, comma-separated (levers,scorer,cli)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    from icrt.runtime.base.files import write_json
    from icrt.runtime.base.hardware import describe
    from icrt.runtime.bundle.defaults import default_bundle
    from icrt.runtime.bundle.manifest import load_manifest
    from icrt.runtime.scoring.inputs import collect

    manifest = load_manifest(args.model or default_bundle())
    paths = collect([args.images], recursive=True)
    skip = set(args.skip.split(","))
    settings = [(b, q) for b in args.backend.split(",") if b for q in args.precisions.split(",") if q]
    cpu = describe()
    result = {"model": manifest.name, "images": len(paths), "cpu": cpu, "load_average_start": os.getloadavg()}
    print(f"{manifest.name} on {len(paths)} images; CPU {cpu}; load average {os.getloadavg()}")
    if "levers" not in skip:
        result["levers"] = preprocessing_levers(paths, manifest.preprocessing, args.rounds)
        print(f"\n1. preprocessing, one core (CPU {cpu})\n" + table(result["levers"], LEVER_COLUMNS))
    if "scorer" not in skip:
        result["scorer"] = scorer_variants(manifest, settings, paths, args.batch_size, args.rounds, args.threads)
        print(f"\n2. Scorer at batch {args.batch_size} (CPU {cpu})\n" +
              table(result["scorer"], ["setting", "variant", "images_per_s", "vs_inference"]))
    if "cli" not in skip:
        tmp = tempfile.mkdtemp(prefix="icrt-e2e-")
        try:
            result["cli"] = cli_runs(os.path.abspath(args.images), args.today, {"default": "", "fastest": args.fastest},
                                     args.rounds, tmp, args.model)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"\n3. icrt score on the folder, fresh processes (CPU {cpu})\n" +
              table(result["cli"], ["command", "images", "images_per_s", "vs_today"]))
    if args.labels:
        result["heldout"] = heldout_srcc(manifest, args.labels, args.threads)
        print(f"\n4. held-out SRCC per decode (CPU {cpu})\n" + table(result["heldout"], HELDOUT_COLUMNS))
    result["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end {os.getloadavg()}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
