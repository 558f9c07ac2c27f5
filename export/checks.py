"""The check set: images that export scores with every form of the model, through the runtime's Scorer.

Parity figures compare the forms on exactly what ``icrt score`` does with these images: the same decoding,
preprocessing, batching and pooling (``runtime.scoring.scorer.Scorer``), with a PyTorch backend for the reference.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from icrt.export.errors import ExportError
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.runtime.scoring.preprocess import load_for_model
from icrt.runtime.scoring.scorer import Scorer, input_cost


@dataclass
class CheckSet:
    """Decoded check images (RGB uint8, as the Scorer's loader hands them out) and their labels, if any."""

    images: list
    labels: np.ndarray | None
    source: str

    @property
    def n_images(self) -> int:
        return len(self.images)


@dataclass
class Scores:
    """One form's scores on the check set: per image (pooled) and per model input (patch)."""

    images: np.ndarray
    inputs: np.ndarray
    patches: np.ndarray  # model inputs per image

    def usual_batch(self) -> int:
        """Median inputs per image: the 'opt' batch of a TensorRT profile."""
        return int(np.median(self.patches)) if len(self.patches) else 1


def data_name(path: str) -> str:
    """A data file as a bundle records it: its name only, never a path of the exporting machine."""
    return os.path.basename(os.path.normpath(path))


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


def check_set_from_images(images, labels=None, source: str = "") -> CheckSet:
    lab = None if labels is None or any(v is None for v in labels) else np.asarray(labels, np.float64)
    return CheckSet(list(images), lab, source)


def check_set_from_paths(items, prep: Preprocessing, source: str) -> CheckSet:
    """Labelled image items (``.path``, ``.score``), decoded once as the runtime decodes them."""
    return check_set_from_images([load_for_model(s.path, prep)[0] for s in items], [s.score for s in items], source)


# Scoring the check set: batches of 32 at 384 px took 1.5 GB per form (onnxruntime and PyTorch alike), more than
# anything else in an fp32 export. PyTorch wants batches (EfficientNet-Lite0 at 384 px on 2 cores: 555 ms an input
# in batches of 4, 350 in 9, 245 in 32; onnxruntime about 35 ms in any).
CHECK_BATCH_BYTES = 512 << 20  # activations of one check batch (the runtime's estimate per input)
CHECK_BATCH = 32  # at most


def check_batch(prep: Preprocessing) -> int:
    """Model inputs per batch when scoring the check set: 9 at 384 px, 32 at 128 px and below."""
    return max(1, min(CHECK_BATCH, CHECK_BATCH_BYTES // input_cost(prep.size)))


def score_check_set(backend, checks: CheckSet, prep: Preprocessing, batch_size: int | None = None) -> Scores:
    """Raw scores of ``backend`` (any object with the runtime's Backend interface) on the check images, in batches of
    ``batch_size`` model inputs (default :func:`check_batch`)."""
    batch_size = batch_size or check_batch(prep)
    scorer = Scorer.for_preprocessing(backend, prep, batch_size=batch_size, workers=0)
    images, inputs, patches = [], [], []
    for rec in scorer.iter_score(checks.images, details=True):
        if "error" in rec:  # decoded already; only a model problem can land here
            raise ValueError(f"check image {rec['image']}: {rec['error']}")
        images.append(rec["score"])
        inputs.extend(rec["patch_scores"])
        patches.append(rec["patches"])
    return Scores(np.asarray(images, np.float64), np.asarray(inputs, np.float64), np.asarray(patches))


# Scores closer together than this (relative to their size) differ by float32 rounding only (~6e-8 relative per
# operation, grown over a network's depth): their order is noise, so the model ranks nothing.
SAME_SCORE = 1e-6


def _distinct_images(checks: CheckSet) -> bool:
    """Whether the check set holds two different images (copies of one image rightly score alike)."""
    first = checks.images[0] if checks.images else None
    return any(img.shape != first.shape or not np.array_equal(img, first) for img in checks.images[1:])


WEIGHTS_HINT = "its weights hold inf, NaN or extreme values"


def refuse_unusable(scores: Scores, checks: CheckSet, what: str = "the model", varies: bool = True,
                    why: str = WEIGHTS_HINT) -> None:
    """ExportError (one line, ending with the likely cause ``why``) when ``what``'s scores on the check images are not
    finite, or (``varies``) the same for every image: a bundle of such a model would fail on every image, or give
    every image one score (its SRCC undefined), and its parity figures would be NaN. Caught here, before a bundle is
    written, rather than as a manifest field later (red-team R13: a kernel head with gamma, alpha or a feature scale of
    inf, NaN or 1e-30)."""
    s = np.asarray(scores.images, np.float64)
    bad = ~np.isfinite(s)
    hint = f"{why}; no bundle written"
    if bad.any():
        nan = np.isnan(s[bad])
        kind = "NaN" if nan.all() else "infinite" if not nan.any() else "NaN or infinite"
        raise ExportError(f"{what}'s scores are {kind} on {int(bad.sum())} of {len(s)} check images "
                          f"({checks.source}): {hint}")
    if varies and len(s) > 1 and np.ptp(s) <= SAME_SCORE * max(1.0, float(np.abs(s).max())) and _distinct_images(checks):
        raise ExportError(f"{what} gives every check image the same score ({float(s[0]):.6g} on {len(s)} images, "
                          f"{checks.source}; SRCC undefined): {hint}")
