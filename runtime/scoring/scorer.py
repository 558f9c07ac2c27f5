"""The Python API: ``Scorer.load(bundle).score(path)``; the CLI is a thin layer over it.

Records are plain dicts (``runtime.bundle.records``), the same the CLI writes:
``{"image": str, "score": float, "patches": int, "width": int, "height": int}``, or ``{"image": str, "error":
str}`` for a file that could not be scored.

Patches of several images share a batch: inputs are queued until ``batch_size`` of them are waiting, run
together, and handed back to their images; records come out in input order. Decoding of the next image
runs on a helper thread while the backend works (Pillow and onnxruntime release the GIL). The loop only yields
records: what is done with them (written, drawn as heatmaps by ``runtime.scoring.heatmap.HeatmapWriter``) is the
consumer's.
"""
from __future__ import annotations

import collections
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from icrt.runtime.backends import Backend, ModelRunError, open_backend, takes_pixels
from icrt.runtime.bundle.manifest import Manifest, load_manifest
from icrt.runtime.bundle.records import ERROR, IMAGE, SCORE, error_record
from icrt.runtime.scoring.heatmap import ScoreMap
from icrt.runtime.scoring.options import ScorerOptions
from icrt.runtime.scoring.preprocess import (
    ImageError,
    Preprocessing,
    fitted_size,
    load_for_model,
    load_resized,
    model_inputs,
    pool_scores,
    resize,
    to_rgb,
)

DEFAULT_BATCH = 32  # model inputs per inference call at most by default (small inputs); larger ones get fewer
# Memory is bounded by bytes, not by a count of inputs: one model input costs about ACTIVATION_FACTOR times its own
# float32 size while the model runs (the default model, EfficientNet-Lite0 at 384 px: ~50 MB an input, 29x its
# 1.77 MB; measured with /usr/bin/time, docs/runtime.md "Memory"). The default batch keeps that cost under
# DEFAULT_BATCH_BYTES and any batch asked for under MAX_BATCH_BYTES.
ACTIVATION_FACTOR = 32
DEFAULT_BATCH_BYTES = 64 * 2**20
MAX_BATCH_BYTES = 2 * 2**30
LOOKAHEAD_MAX = 8  # images decoded ahead of the model at most
SCORE_TOLERANCE = 1e-3  # scores this far outside the model's range are clipped into it; further out is an error
MAX_FAILURE_LINES = 20  # failed batches told one by one on stderr (all are counted)
NON_FINITE = "model returned a non-finite score"
log = logging.getLogger("runtime")


ENCODED = (bytes, bytearray, memoryview)  # the bytes of an encoded file (a memoryview too: not a 1-D array)
NOT_AN_IMAGE = "give a path, the bytes of an encoded file, a Pillow image or a uint8 array"


def is_array(image) -> bool:
    """An in-memory array of pixels: numpy's, or anything numpy reads as one (``__array_interface__``, ``__array__``)."""
    return isinstance(image, np.ndarray) or hasattr(image, "__array_interface__") or hasattr(image, "__array__")


def check_image_type(image) -> None:
    """TypeError unless ``image`` is something the Scorer takes as one image: a path (str or os.PathLike), the bytes of
    an encoded file (bytes, bytearray, memoryview), a Pillow image or an array. None, numbers, dicts and lists are
    not images (a list is many)."""
    from PIL import Image

    if not isinstance(image, (str, os.PathLike, *ENCODED, Image.Image)) and not is_array(image):
        raise TypeError(f"not an image: {type(image).__name__} ({NOT_AN_IMAGE})")


def as_rgb_array(image, name: str = "<image>") -> np.ndarray:
    """A Pillow image or a uint8 array (HxW, HxWx3, HxWx4 RGBA) -> HxWx3 uint8 RGB; ImageError naming the problem (a
    Pillow image whose data is truncated or that is closed, no pixels, a wrong dtype or shape), TypeError for
    anything that is not an image."""
    from PIL import Image

    from icrt.runtime.scoring.preprocess import pillow_rgb

    if isinstance(image, Image.Image):
        return np.asarray(pillow_rgb(image, name), dtype=np.uint8)
    check_image_type(image)
    if isinstance(image, (str, os.PathLike, *ENCODED)):
        raise TypeError(f"{type(image).__name__} is a file or its bytes, not an array: pass it to Scorer.score")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ImageError(name, f"image arrays must be uint8 RGB (got {a.dtype}); convert with "
                               "(x * 255).astype('uint8')")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise ImageError(name, f"image arrays must be HxW, HxWx3 or HxWx4 (got shape {a.shape})")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(name, f"image has no pixels (shape {a.shape})")
    return np.asarray(to_rgb(Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[2] == 1 else a)))


HEATMAP_SIDE = 1024  # heatmaps are drawn over a copy of the image with this long side at most


def heatmap_copy(rgb: np.ndarray) -> np.ndarray:
    """The image a heatmap is drawn over: reduced, so that images waiting in a batch stay small."""
    h, w = rgb.shape[:2]
    if max(h, w) <= HEATMAP_SIDE:
        return rgb
    f = HEATMAP_SIDE / max(h, w)
    return resize(rgb, max(1, round(w * f)), max(1, round(h * f)), "bilinear")


_LOWERED_TOLD: set = set()


def input_cost(size: int) -> int:
    """Bytes one model input of ``size`` x ``size`` costs while the model runs (an estimate, see above)."""
    return ACTIVATION_FACTOR * 3 * int(size) * int(size) * 4


def batch_limits(size: int) -> tuple[int, int]:
    """(default, largest) model inputs per inference call for inputs of ``size`` x ``size`` pixels."""
    cost = input_cost(size)
    return max(1, min(DEFAULT_BATCH, DEFAULT_BATCH_BYTES // cost)), max(1, MAX_BATCH_BYTES // cost)


class _Item:
    """One image on its way through the batcher."""

    __slots__ = ("record", "x", "positions", "scores", "filled", "rgb", "geometry", "error")

    def __init__(self, record, x=None, positions=None, rgb=None, geometry=None):
        self.record, self.x, self.positions, self.rgb, self.geometry = record, x, positions, rgb, geometry
        self.scores = None if x is None else np.empty(len(x), np.float32)
        self.filled = 0
        self.error = None  # the model failed on a batch holding some of this image's inputs

    @property
    def done(self) -> bool:
        return self.x is None or self.filled == len(self.x)


class Scorer:
    """Images -> model inputs -> shared batches -> pooled scores, on any object with the Backend interface.

    ``Scorer(manifest, backend)`` scores as the bundle says (its preprocessing; scores checked against its range);
    :meth:`load` opens a bundle and its backend; :meth:`for_preprocessing` is the bundle-less mode (training-time
    evaluation, export parity, Triton's front model). ``loader(image) -> (rgb, (width, height))`` replaces
    decoding (e.g. a cache of decoded images).
    """

    def __init__(self, manifest: Manifest, backend: Backend, batch_size: int | None = None, workers: int = 1,
                 loader=None):
        self._setup(backend, manifest.preprocessing, manifest.score_range, batch_size, workers, loader)
        self.manifest = manifest

    @classmethod
    def for_preprocessing(cls, backend: Backend, preprocessing: Preprocessing, *, score_range=None,
                          batch_size: int | None = None, workers: int = 1, loader=None) -> "Scorer":
        """A Scorer without a bundle: ``preprocessing`` as given; ``score_range=None`` takes the model's scores
        raw and unchecked (training-time evaluation, export parity), ``(lo, hi)`` checks them as a bundle's."""
        self = cls.__new__(cls)
        self._setup(backend, preprocessing, score_range, batch_size, workers, loader)
        self.manifest = None
        return self

    def _setup(self, backend, prep: Preprocessing, score_range, batch_size, workers, loader) -> None:
        self.backend, self.prep, self.loader, self.workers = backend, prep, loader, workers
        default, cap = batch_limits(prep.size)
        self.batch_size = max(1, int(batch_size or default))
        if self.batch_size > cap:
            if (self.batch_size, cap) not in _LOWERED_TOLD:  # once per process (training makes a Scorer an epoch)
                _LOWERED_TOLD.add((self.batch_size, cap))
                log.warning("icrt: batch size %d lowered to %d: %d px model inputs cost about %d MB each while the "
                            "model runs, and a batch is kept under %d MB", self.batch_size, cap, prep.size,
                            round(input_cost(prep.size) / 2**20), MAX_BATCH_BYTES // 2**20)
            self.batch_size = cap
        if backend.max_batch:
            self.batch_size = min(self.batch_size, backend.max_batch)
        self.pixels = takes_pixels(backend, prep)  # uint8 inputs, normalised in the model
        self.score_range = None if score_range is None else tuple(float(v) for v in score_range)
        self.run_failures = RunFailures()
        self.checked = self.non_finite = 0  # images whose scores were checked; those with a NaN or infinite one

    def non_finite_model(self) -> str | None:
        """The line a run ends with when the model gave a non-finite score (NaN, infinity) for every image whose
        scores were checked: the model is broken (a model error, exit code 2), not the images; None otherwise."""
        if not self.checked or self.non_finite < self.checked:
            return None
        return (f"the model gave a non-finite score (NaN or infinity) for every image it scored ({self.non_finite} "
                "of them): the model is broken, not the images (each has its own error record)")

    def model_problem(self) -> str | None:
        """Why the model, not the images, is at fault (a batch it failed to run, a non-finite score for every image:
        a model error, exit code 2), or None."""
        return self.run_failures.message() if self.run_failures else self.non_finite_model()

    @classmethod
    def open(cls, options: ScorerOptions) -> "Scorer":
        """The Scorer ``options`` describe: its bundle (``model``; None: the default bundle) opened on its backend."""
        manifest = load_manifest(options.bundle())
        return cls(manifest, open_backend(manifest, options), options.batch_size, options.workers)

    @classmethod
    def load(cls, bundle: str | None = None, **options) -> "Scorer":
        """Open a bundle folder (None: the default bundle); ``options``: the fields of :class:`ScorerOptions`
        (``backend="auto"``, ``precision="fp32"``, ``batch_size``, ``threads``, ``device_id``, ``workers``)."""
        return cls.open(ScorerOptions(model=bundle, **options))

    # --- public API --------------------------------------------------------------------------------
    def score(self, image, details: bool = False) -> dict:
        """Score one image (path, bytes of an encoded file, Pillow image or uint8 array). Raises ImageError for a bad
        image, TypeError for what is not an image (None, a number, a dict, a list: :meth:`score_many`; with a
        ``loader``, whatever it takes)."""
        if self.loader is None:
            check_image_type(image)
        rec = next(self.iter_score([image], details=details))
        if ERROR in rec:
            raise ImageError(rec[IMAGE], rec[ERROR])
        return rec

    def score_many(self, images, details: bool = False) -> list[dict]:
        """Score many images (an iterable of what :meth:`score` takes); a bad one gives an ``error`` record and the
        rest are still scored."""
        return list(self.iter_score(images, details=details))

    def info(self) -> dict:
        m = self.manifest
        return {"bundle": m.root if m else None, "kind": m.kind if m else None, "name": m.name if m else None,
                "batch_size": self.batch_size, **self.backend.describe()}

    def what_ran(self) -> str:
        """What scores, in a few words: ``openvino 2026.4.1, fp32, cpu`` (the backend that runs, never ``auto``)."""
        d = self.backend.describe() if hasattr(self.backend, "describe") else {}
        engine = " ".join(str(v) for v in (d.get("backend", type(self.backend).__name__), d.get("version")) if v)
        return ", ".join(str(v) for v in (engine, d.get("precision"), d.get("device")) if v)

    # --- the batcher -------------------------------------------------------------------------------
    def prepare(self, image, index: int = 0, keep_rgb: bool = False) -> _Item:
        """Decode and preprocess one image; any problem becomes an error record, never an exception (an input that is
        no image at all too: one bad item of a list must not lose the others)."""
        is_path = isinstance(image, (str, os.PathLike))
        name = os.fspath(image) if is_path else getattr(image, "filename", "") or f"<image {index}>"
        if not isinstance(name, str):
            name = f"<image {index}>"
        try:
            if self.loader is not None:
                rgb, (w, h) = self.loader(image)
            elif (is_path or isinstance(image, ENCODED)) and keep_rgb:  # the full image for a heatmap
                rgb, (w, h) = load_for_model(image, self.prep)
            elif is_path or isinstance(image, ENCODED):
                rgb, (w, h) = load_resized(image, self.prep)
            else:
                rgb = as_rgb_array(image, name)
                h, w = rgb.shape[:2]
            x, pos = model_inputs(rgb, self.prep, self.pixels)
        except ImageError as e:
            return _Item(error_record(name, e.problem))
        except TypeError as e:
            return _Item(error_record(name, str(e)))
        except Exception as e:  # noqa: BLE001 (per image: the rest of the run goes on)
            return _Item(error_record(name, f"cannot score image ({type(e).__name__}: {e})"))
        geometry = fitted_size(h, w, self.prep)
        rec = {IMAGE: name, SCORE: None, "patches": len(x), "width": int(w), "height": int(h)}
        return _Item(rec, x, pos, heatmap_copy(rgb) if keep_rgb else None, geometry)

    def _decoded(self, images, keep_rgb: bool):
        """prepare() over ``images``, the next ones decoded ahead on a helper thread (bounded)."""
        if self.workers <= 0:
            for i, im in enumerate(images):
                yield self.prepare(im, i, keep_rgb)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="icrt-decode")
        finished = False
        try:
            ahead = collections.deque()
            # decode up to one batch ahead, so the next batch is ready when the model finishes this one;
            # capped at 8 images to bound memory (a patch-policy photo can be hundreds of MB of inputs)
            limit = max(2 * self.workers, min(self.batch_size, LOOKAHEAD_MAX))
            for i, im in enumerate(images):
                ahead.append(pool.submit(self.prepare, im, i, keep_rgb))
                if len(ahead) > limit:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
            finished = True
        finally:
            # interrupted (Ctrl+C, SIGTERM) or closed early: do not wait for a decode that may never end (a slow
            # or stuck file system); what is queued is cancelled
            pool.shutdown(wait=finished, cancel_futures=not finished)

    def iter_score(self, images, details: bool = False, maps=False):
        """Yield one record per image, in input order.

        ``details``: add each model input's score and position (``patch_scores``, ``patch_positions``,
        ``geometry``). ``maps``: add a :class:`runtime.scoring.heatmap.ScoreMap` under ``map`` for a heatmap consumer (the
        patch scores; for square models the scores of local windows, run here); a callable is asked before each
        map (``False``: no more maps, e.g. after a heatmap could not be written)."""
        if isinstance(images, (str, os.PathLike, *ENCODED, Mapping)):
            raise TypeError(f"images must be an iterable of images, not a {type(images).__name__} "
                            "(one image: Scorer.score)")
        pending = collections.deque()  # items not yet yielded, in input order
        queue = collections.deque()  # (item, start) of inputs waiting for a batch
        waiting = 0
        want_map = maps if callable(maps) else (lambda: bool(maps))

        def run_batch(n):
            nonlocal waiting
            parts, owners = [], []
            while n > 0 and queue:
                item, start = queue[0]
                take = min(n, len(item.x) - start)
                parts.append(item.x[start:start + take])
                owners.append((item, start, take))
                if start + take == len(item.x):
                    queue.popleft()
                else:
                    queue[0] = (item, start + take)
                n -= take
            batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
            waiting -= len(batch)
            try:
                scores = self.backend.run(batch)
            except ModelRunError as e:  # this batch's images get error records; the others go on
                problem = self.run_failures.add(e, len(batch), len(owners))
                for item, _, take in owners:
                    item.error = problem
                    item.filled += take
                return
            off = 0
            for item, start, take in owners:
                item.scores[start:start + take] = scores[off:off + take]
                item.filled += take
                off += take

        def finished():
            while pending and pending[0].done:
                yield self._finish(pending.popleft(), details, want_map)

        for item in self._decoded(images, keep_rgb=bool(maps)):
            pending.append(item)
            if item.x is not None:
                queue.append((item, 0))
                waiting += len(item.x)
                while waiting >= self.batch_size:
                    run_batch(self.batch_size)
            yield from finished()
        while waiting:
            run_batch(min(waiting, self.batch_size))
        yield from finished()

    def local_windows(self, rgb: np.ndarray):
        """For heatmaps of square-policy models: score overlapping square windows (half the short side,
        stride a quarter of it), each resized to the model input like a whole image. The image score is
        unaffected; this only shows where the model sees complexity."""
        from icrt.runtime.bundle.preprocessing import patch_grid
        from icrt.runtime.scoring.preprocess import normalize

        h, w = rgb.shape[:2]
        side = max(1, min(h, w) // 2)
        positions = patch_grid(h, w, side, max(1, side // 2))
        p = self.prep
        x = np.stack([resize(rgb[t:t + side, left:left + side], p.size, p.size, p.interpolation) for t, left in positions])
        if not self.pixels:
            x = normalize(x, p.mean, p.std)
        scores = np.concatenate([self.backend.run(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        return (h, w), positions, side, scores

    def check_scores(self, scores: np.ndarray) -> str | None:
        """What is wrong with a model's scores for one image (None: nothing; near-misses are clipped in place)."""
        if self.score_range is None:  # raw scores (training-time evaluation): no checks
            return None
        if not np.all(np.isfinite(scores)):
            return NON_FINITE
        lo, hi = self.score_range
        out = scores[(scores < lo - SCORE_TOLERANCE) | (scores > hi + SCORE_TOLERANCE)]
        if out.size:
            return f"score {float(out[0]):.4g} outside the model's range [{lo:g}, {hi:g}]"
        np.clip(scores, lo, hi, out=scores)
        return None

    def _finish(self, item: _Item, details: bool, want_map) -> dict:
        rec = item.record
        if item.x is None:
            return rec
        problem = item.error
        if problem is None:
            problem = self.check_scores(item.scores)
            self.checked += 1
            self.non_finite += problem == NON_FINITE
        if problem:
            item.x = item.rgb = None
            return error_record(rec[IMAGE], problem)
        rec[SCORE] = pool_scores(item.scores, self.prep)
        if details:
            rec["patch_scores"] = [float(s) for s in item.scores]
            rec["patch_positions"] = [list(p) for p in item.positions]
            rec["geometry"] = list(item.geometry)
        if item.rgb is not None and want_map():
            if self.prep.resize == "square":  # one input per image: map local windows instead
                try:
                    geometry, positions, side, scores = self.local_windows(item.rgb)
                except ModelRunError as e:  # the image is scored; only its map is missing
                    self.run_failures.add(e, 0, 0)
                else:
                    rec["map"] = ScoreMap(item.rgb, geometry, positions, side, scores, rec[SCORE],
                                          f"map: {len(scores)} local windows")
            else:
                rec["map"] = ScoreMap(item.rgb, item.geometry, item.positions, self.prep.size, item.scores,
                                      rec[SCORE])
        item.x = item.rgb = None  # free the inputs as soon as the record is out
        return rec


class RunFailures:
    """Batches the model failed to run (``ModelRunError``): counted, the first ones told on stderr (one line each,
    the engine's message made printable: it quotes the model's node names, which a bundle chooses). The images of a
    failed batch get an error record; commands end with exit code 2 (a model error). Safe to add to from several
    threads (one Scorer may serve several)."""

    def __init__(self):
        import threading

        self.batches = self.inputs = self.images = 0
        self.first: str | None = None
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return self.batches > 0

    def add(self, e: ModelRunError, inputs: int, images: int) -> str:
        """Count one failed batch of ``inputs`` model inputs from ``images`` images; the error text for them."""
        from icrt.runtime.base.text import printable

        text = printable(" ".join(str(e).split()))
        with self._lock:
            self.batches += 1
            self.inputs += inputs
            self.images += images
            self.first = self.first or text
            batches = self.batches
        if batches <= MAX_FAILURE_LINES:
            what = f"a batch of {inputs} input(s), {images} image(s)" if inputs else "a heatmap's local windows"
            log.error("icrt: error: the model failed on %s: %s", what, text)
        elif batches == MAX_FAILURE_LINES + 1:
            log.error("icrt: error: the model failed on more batches; their images have error records")
        cause = getattr(e, "cause", None)
        return f"the model failed on this image's batch ({printable(cause) if cause else 'see the error above'})"

    def message(self) -> str:
        """The one line a command ends with."""
        return (f"the model failed while running {self.batches} batch(es) ({self.images} image(s) got an error "
                f"record, the others were scored and written): {self.first}")
