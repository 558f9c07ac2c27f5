"""``python -m train.protocol``: the evaluation protocols that measure how a model generalises.

    python -m train.protocol PROTOCOL --data PATH [--test-data PATH] --out DIR \
        --model "d2s --backbone resnet18 --text none" [--model "d2s ... --scene-sampling 7 --loss scale-shift"]

Protocols (test images are never trained or validated on):
- ``random-split``: a seeded, category-stratified 8:2 split per round (seeds 42, 826, 1215 as in D2S).
- ``leave-one-scene-out``: for every category, train on the others and test on it (one round per category).
- ``cross-set``: train on ``--data`` (A), test on ``--test-data`` (B; an IC9600 folder gives its test.txt).
- ``few-shot``: D2S Table 2: N training images (``--shots``, default 10 50 100 500) sampled evenly over ten
  equal-width score bins of the round's 80 % training part, tested on its 20 %.

Each ``--model`` is the argument list of ``python -m train`` without ``--data`` / ``--out`` (the protocol
supplies them, and the round's seed). Models train in this process through the library. Each protocol writes
``results.json`` (every round's metrics) and ``results.md`` (one row per model and setting, mean +- std
over rounds). Rows are pooled over the test images, except leave-one-scene-out (one scene per test set) and
the per-scene means noted in the JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import shlex
import sys
import time
from collections import defaultdict

import numpy as np

import icrt.train.metrics as metrics
from icrt.runtime.base.errors import UserInputError
from icrt.train.data import DataError, Sample, data_paths, is_ic9600, load_many, split_train_val
from icrt.train.kinds import kind_names

logger = logging.getLogger(__name__)

PROTOCOLS = ("random-split", "leave-one-scene-out", "cross-set", "few-shot")
SEEDS = (42, 826, 1215)
SHOTS = (10, 50, 100, 500)
CELLS = ("srcc", "plcc", "krcc", "rmse", "rmae")


# --- splits (pure functions of the samples; the tests check them) -------------------------------------
def random_split_rounds(samples, seeds=SEEDS, test_fraction=0.2):
    """[(setting, seed, train, test)]: one stratified split per seed."""
    return [("8:2", s, *split_train_val(samples, test_fraction, s, stratify=True)) for s in seeds]


def leave_one_scene_out_rounds(samples, seeds=(42,)):
    """[(held-out scene, seed, train, test)]: every image is tested exactly once per seed."""
    scenes = sorted({s.category for s in samples}, key=str)
    if len(scenes) < 2:
        raise DataError("leave-one-scene-out needs a category column with at least two categories")
    return [(str(c), seed, [s for s in samples if s.category != c], [s for s in samples if s.category == c])
            for seed in seeds for c in scenes]


def score_bins(scores, n_bins=10):
    """Bin index of each score: ten equal-width bins over [0, 1] (over [min, max] when scores leave it)."""
    x = np.asarray(scores, np.float64)
    lo, hi = (0.0, 1.0) if x.min() >= 0 and x.max() <= 1 else (float(x.min()), float(x.max()))
    b = np.floor((x - lo) / max(hi - lo, 1e-12) * n_bins).astype(int)
    return np.clip(b, 0, n_bins - 1)


def few_shot_sample(samples, n, seed, n_bins=10):
    """n images spread evenly over the score bins: n // bins from each (D2S A.5: SST@10 = one per bin),
    the remainder and any bin's shortfall (bins with too few images) filled one at a time, round-robin,
    from the bins that still have images. Seeded; returns all samples when n >= len(samples)."""
    if n >= len(samples):
        return list(samples)
    rng = random.Random(seed)
    pools = defaultdict(list)
    for s, b in zip(samples, score_bins([s.score for s in samples], n_bins)):
        pools[int(b)].append(s)
    for b in pools:
        rng.shuffle(pools[b])
    bins = sorted(pools)
    take = {b: min(n // n_bins, len(pools[b])) for b in bins}
    left = n - sum(take.values())
    order = bins[:]
    rng.shuffle(order)
    while left > 0:
        for b in order:
            if left > 0 and take[b] < len(pools[b]):
                take[b] += 1
                left -= 1
    return [s for b in bins for s in pools[b][: take[b]]]


def few_shot_rounds(samples, shots=SHOTS, seeds=SEEDS, test_fraction=0.2):
    out = []
    for seed in seeds:
        pool, test = split_train_val(samples, test_fraction, seed, stratify=True)
        for n in shots:
            out.append((f"{n} images", seed, few_shot_sample(pool, n, seed), test))
    return out


def cross_set_rounds(train, test, seeds=(42,), name="A -> B"):
    return [(name, s, list(train), list(test)) for s in seeds]


# --- running -------------------------------------------------------------------------------------------
_DECODED: dict = {}  # preprocessing -> {image path: resized image}, shared by every round of this process


def _share_decoded(trainer):
    """Point the trainer's caches at one store per preprocessing, so a protocol decodes each image once
    (resizing is deterministic, so this is exact); returns the cache to score the test set with."""
    import json as _json

    from icrt.train.dataset import GeometryCache

    key = _json.dumps(trainer.prep.to_dict(), sort_keys=True)
    store = _DECODED.setdefault(key, {})
    for c in (trainer.train_cache, trainer.val_cache):
        if c.enabled:
            c._store = store
    test_cache = GeometryCache(trainer.prep, enabled=trainer.train_cache.enabled)
    test_cache._store = store
    return test_cache


@contextlib.contextmanager
def _quiet(*names):
    """The loggers ``names`` (and their children) pass warnings and errors only, for the duration."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def train_and_test(model_argv: list[str], data: str, out: str, seed: int, train: list[Sample],
                   test: list[Sample]) -> dict:
    """Train one model (``python -m train`` arguments) on ``train`` and score ``test`` with its best checkpoint.
    The trainer's progress lines are left out (its warnings stay)."""
    from icrt.train.checkpoint import load_checkpoint, model_from_checkpoint
    from icrt.train.cli import build_parser, trainer_for
    from icrt.train.evaluate import evaluate
    from icrt.train.kinds import get_kind

    args = build_parser().parse_args(model_argv + ["--data", data, "--out", out])
    args.seed = seed
    trainer_cls = get_kind(args.kind).trainer_class()
    with _quiet("train", *{c.__module__ for c in trainer_cls.__mro__ if c is not object}):
        trainer = trainer_for(args, samples=train)
        test_cache = _share_decoded(trainer)
        t0 = time.time()
        trainer.fit()
        model = model_from_checkpoint(load_checkpoint(os.path.join(out, "checkpoint.pt"))).to(trainer.device)
        rep, _ = evaluate(model, test, trainer.prep, trainer.device, trainer.cfg.batch_size, test_cache)
    rep["seconds"] = round(time.time() - t0, 1)
    rep["n_train"] = len(train)
    return rep


def _cell(values) -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "n/a"
    if len(values) == 1:
        return f"{v[0]:.4f}"
    return f"{np.mean(v):.4f} ± {np.std(v):.4f}"


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (model, setting): mean and std of each cell over the rounds (seeds)."""
    groups = defaultdict(list)
    for r in runs:
        groups[(r["model"], r["setting"])].append(r)
    rows = []
    for (model, setting), rs in groups.items():
        row = {"model": model, "setting": setting, "rounds": len(rs)}
        for k in CELLS:
            vals = [r["metrics"][k] for r in rs]
            row[k] = {"mean": float(np.nanmean(vals)) if any(math.isfinite(v) for v in vals) else float("nan"),
                      "std": float(np.nanstd(vals)) if any(math.isfinite(v) for v in vals) else float("nan"),
                      "values": vals, "cell": _cell(vals)}
        rows.append(row)
    return rows


def scene_mean_rows(runs: list[dict]) -> list[dict]:
    """Leave-one-scene-out: per model, mean +- std over the held-out scenes (of the per-seed scene means)."""
    by_model = defaultdict(list)
    for r in runs:
        by_model[r["model"]].append(r)
    rows = []
    for model, rs in by_model.items():
        row = {"model": model, "setting": "mean over scenes", "rounds": len(rs)}
        for k in CELLS:
            vals = [r["metrics"][k] for r in rs]
            row[k] = {"mean": float(np.nanmean(vals)), "std": float(np.nanstd(vals)), "values": vals,
                      "cell": _cell(vals)}
        rows.append(row)
    return rows


def write_results(out: str, protocol: str, runs: list[dict], header: dict) -> tuple[str, str]:
    from icrt.runtime.base.files import write_json, write_text

    rows = summarise(runs)
    if protocol == "leave-one-scene-out":
        rows += scene_mean_rows(runs)
    os.makedirs(out, exist_ok=True)
    jpath, mpath = os.path.join(out, "results.json"), os.path.join(out, "results.md")
    write_json(jpath, {"protocol": protocol, **header, "rows": rows, "runs": runs})
    lines = [f"# {protocol}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| model | setting | rounds | SRCC | PLCC | KRCC | RMSE | RMAE |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['model']}` | {r['setting']} | {r['rounds']} | " + " | ".join(r[k]["cell"] for k in CELLS) + " |")
    lines.append("")
    write_text(mpath, "\n".join(lines))
    return jpath, mpath


def make_rounds(args):
    samples = load_many(args.data, "train")
    seeds = tuple(args.seeds)
    if args.protocol == "random-split":
        return random_split_rounds(samples, seeds)
    if args.protocol == "leave-one-scene-out":
        return leave_one_scene_out_rounds(samples, seeds if args.seeds_given else (42,))
    if args.protocol == "few-shot":
        return few_shot_rounds(samples, tuple(args.shots), seeds)
    if not args.test_data:
        raise DataError("cross-set needs --test-data")
    test = load_many(args.test_data, "test" if all(is_ic9600(p) for p in data_paths(args.test_data)) else "train")
    return cross_set_rounds(samples, test, seeds if args.seeds_given else (42,),
                            f"{','.join(data_paths(args.data))} -> {','.join(data_paths(args.test_data))}")


def run(args) -> list[dict]:
    rounds = make_rounds(args)
    models = [shlex.split(m) for m in args.model]
    runs = []
    t_all = time.time()
    for mi, (m_text, argv) in enumerate(zip(args.model, models)):
        for setting, seed, train, test in rounds:
            run_dir = os.path.join(args.out, "runs", f"model{mi}", f"{setting.replace(' ', '_').replace('/', '_')}_seed{seed}")
            rep = train_and_test(argv, ",".join(data_paths(args.data)), run_dir, seed, train, test)
            logger.info(f"[{m_text}] {setting} seed {seed}: train {len(train)} test {len(test)} "
                        f"({rep['seconds']}s)  {metrics.format_line(rep)}")
            runs.append({"model": m_text, "setting": setting, "seed": seed, "n_train": len(train), "n_test": len(test),
                         "seconds": rep["seconds"], "metrics": {k: v for k, v in rep.items() if k != "per_category"},
                         "per_category": rep.get("per_category", {})})
    header = {"data": ",".join(data_paths(args.data)), "seeds": list(args.seeds),
              "seconds": round(time.time() - t_all, 1)}
    if args.test_data:
        header["test_data"] = ",".join(data_paths(args.test_data))
    jpath, mpath = write_results(args.out, args.protocol, runs, header)
    logger.info(f"wrote {mpath} and {jpath}")
    return runs


def build_parser() -> argparse.ArgumentParser:
    from icrt.train.trainers import load_trainers

    load_trainers()
    p = argparse.ArgumentParser(prog="python -m train.protocol", description=__doc__.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("protocol", choices=PROTOCOLS)
    p.add_argument("--data", required=True, action="append", help="training data (comma-separated or repeated)")
    p.add_argument("--test-data", action="append", help="cross-set: the test data set B")
    p.add_argument("--out", required=True, help="folder for results.md, results.json and runs/")
    p.add_argument("--model", action="append", required=True,
                   help=f'"{"|".join(kind_names(trainable=True))} [train options]" (no --data/--out); repeat for '
                        'several models or settings')
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                   help="rounds (random-split, few-shot; leave-one-scene-out and cross-set run seed 42 unless given)")
    p.add_argument("--shots", type=int, nargs="+", default=list(SHOTS), help="few-shot training set sizes")
    return p


def check_models(models: list[str]) -> None:
    """Each ``--model`` starts with a registered kind and leaves ``--data`` / ``--out`` to the protocol."""
    from icrt.train.trainers import load_trainers

    load_trainers()
    names = kind_names(trainable=True)
    choices = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)
    for m in models:
        words = shlex.split(m)
        if not words or words[0] not in names or "--data" in words or "--out" in words:
            raise UserInputError(f"--model {m!r}: start with {choices} and leave --data / --out to the protocol")


def main(argv=None) -> int:
    from icrt.runtime.base.errors import run_command, setup_logging

    argv = sys.argv[1:] if argv is None else argv
    p = build_parser()
    args = p.parse_args(argv)
    args.seeds_given = "--seeds" in argv
    setup_logging()

    def protocol():
        check_models(args.model)
        run(args)

    return run_command(p.prog, protocol)


if __name__ == "__main__":
    sys.exit(main())
