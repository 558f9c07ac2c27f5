"""A bundle's preprocessing policy (its manifest's ``preprocessing`` section; checkpoints carry the same): data, no
pixels. The pixel operations that carry it out, shared by training, calibration and the runtime, are
``icrt.runtime.scoring.preprocess``.

Resize policies:
- ``square``: the whole image is resized to ``size x size`` (D2S resizes to 512x512 in the paper).
- ``patches``: the image keeps its aspect ratio; ``size x size`` crops are taken on a ``stride`` grid
  that covers the whole image (last row / column aligned to the edge), as in CM-SSA's patch testing.
  Images smaller than a patch are upscaled so the short side fits; ``max_long_side`` optionally caps
  the long side first. Patch scores are pooled per image (``pool``: mean).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

INTERPOLATIONS = ("bilinear", "bicubic")
RESIZE_POLICIES = ("square", "patches")
DRAFT_RANGE = (0.125, 1.0)


@dataclass(frozen=True)
class Preprocessing:
    resize: str = "square"  # "square" | "patches"
    size: int = 512  # model input side (square side, or patch side)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"
    stride: int = 64  # patch grid stride ("patches" only)
    max_long_side: int | None = None  # cap applied before patching ("patches" only)
    pool: str = "mean"  # how patch scores become an image score
    # JPEGs ("square" only) are decoded by libjpeg at the smallest DCT scale (1/2, 1/4, 1/8) whose short side stays
    # >= draft x size, then resized: 1.0 never goes below the input side (the resize loses nothing to it); 0.5 lets a
    # 640 x 480 photo decode at 320 x 240 for a 384 px input, ~2x cheaper (docs/runtime.md). A model is trained
    # with the draft it runs with (training and the runtime share this policy).
    draft: float = 1.0

    def __post_init__(self):
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {self.resize!r} (square|patches)")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if self.pool != "mean":
            raise ValueError(f"unknown patch pooling {self.pool!r} (mean)")
        if not DRAFT_RANGE[0] <= float(self.draft) <= DRAFT_RANGE[1]:
            raise ValueError(f"draft {self.draft!r} outside [{DRAFT_RANGE[0]}, {DRAFT_RANGE[1]}]")
        object.__setattr__(self, "draft", float(self.draft))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if d["draft"] == 1.0:  # the default: left out, so bundles made before the field read and write as they were
            del d["draft"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


# --- the policy's geometry (arithmetic only: every stage that places patches or sizes inputs reads it) ---


def draft_scale(width: int, height: int, prep: Preprocessing) -> int:
    """The DCT scale (1, 2, 4 or 8) a ``width`` x ``height`` JPEG is decoded at for ``prep``: the largest that keeps the
    short side >= ``prep.draft`` x the input side; 1 (full size) for the patch policy."""
    if prep.resize != "square":
        return 1
    for s in (8, 4, 2):
        if min(width, height) >= s * prep.draft * prep.size:
            return s
    return 1


def fitted_size(height: int, width: int, prep: Preprocessing) -> tuple[int, int]:
    """(height, width) of a model's view of an image (:func:`geometry`, :func:`load_resized`): the square input, or
    for patches the long-side cap (``max_long_side``), then an upscale so that the short side is at least one
    patch."""
    if prep.resize == "square":
        return prep.size, prep.size
    scale = 1.0
    if prep.max_long_side and max(height, width) > prep.max_long_side:
        scale = prep.max_long_side / max(height, width)
    if min(height, width) * scale < prep.size:
        scale = prep.size / min(height, width)
    if scale == 1.0:
        return height, width
    return max(prep.size, round(height * scale)), max(prep.size, round(width * scale))


def patch_count(height: int, width: int, prep: Preprocessing) -> int:
    """How many model inputs an image of this size becomes."""
    if prep.resize == "square":
        return 1
    h, w = fitted_size(height, width, prep)
    return len(grid_positions(h, prep.size, prep.stride)) * len(grid_positions(w, prep.size, prep.stride))


def grid_positions(length: int, patch: int, stride: int) -> list[int]:
    """Start offsets of patches covering [0, length): stride steps, last one aligned to the edge."""
    if length <= patch:
        return [0]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def patch_grid(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """(top, left) of every patch, row-major."""
    return [(t, x) for t in grid_positions(height, patch, stride) for x in grid_positions(width, patch, stride)]
