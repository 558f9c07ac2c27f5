"""Image preprocessing shared by training, evaluation, calibration and the runtime: decoding, the resize policy's
geometry, normalisation, patches.

Written once, in numpy + Pillow, so that every stage sees the same pixels. The policy is data
(:class:`icrt.runtime.bundle.preprocessing.Preprocessing`), stored in checkpoints and in a bundle's manifest.
"""
from __future__ import annotations

import functools
import io
import os
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps

from icrt.runtime.base.errors import UserInputError
from icrt.runtime.base.files import SYMLINK_LOOP, is_symlink_loop
from icrt.runtime.bundle.preprocessing import Preprocessing, draft_scale, fitted_size, patch_count, patch_grid

# Patch inputs are made batch by batch (PatchInputs), so memory does not grow with the patch count; what
# stays bounded is the fitted image itself (a 1 x 5000 strip upscaled for 224 px patches would be 224 x 1.1 M
# pixels) and the work (patches). Beyond these an image gets a clear error instead.
MAX_PATCHES = 16384
MAX_FITTED_PIXELS = 64_000_000  # 192 MB of uint8 RGB

_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}  # INTERPOLATIONS
_TRANSPOSED = (2, 3, 4, 5, 6, 7, 8)  # EXIF orientations ImageOps.exif_transpose acts on


class ImageError(UserInputError):
    """An image that cannot be decoded; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --- decoding ---------------------------------------------------------------------------------


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited over white."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if a.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0
        a = np.clip(np.round(a / peak * 255.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(a, "L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(np.round(a * 255.0 if a.max(initial=0) <= 1.0 else a), 0, 255).astype(np.uint8)
        im = Image.fromarray(a, "L")
    if im.mode == "La":  # premultiplied: Pillow converts it to LA only
        im = im.convert("LA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")
        except ValueError:  # a mode Pillow cannot take to RGB in one step: through RGBA, then over white
            im = to_rgb(im.convert("RGBA"))
    return im


def load_rgb(source) -> np.ndarray:
    """Decode a path, bytes or file object to an HxWx3 uint8 RGB array (EXIF orientation applied).

    Raises :class:`ImageError` naming the file and the problem, so that a batch can report one line per
    bad file and go on with the others.
    """
    return _decode(source)[0]


def load_for_model(source, prep: "Preprocessing | None") -> tuple[np.ndarray, tuple[int, int]]:
    """Decode for a model input: (RGB array, (width, height) of the full image).

    A JPEG larger than a square model input is decoded at 1/2, 1/4 or 1/8 scale by libjpeg (Pillow's ``draft``), its
    short side kept >= ``prep.draft`` x the input side (1.0: never below it); the resize that follows then does less
    work. This is the decode every stage uses (runtime, training, evaluation, calibration), so they see the same
    pixels.
    """
    return _decode(source, prep)


def load_resized(source, prep: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode and resize for a model input in one pass: (``geometry(load_for_model(source, prep)[0], prep)``, (width,
    height) of the full image), the same pixels.

    The resize runs on the decoded Pillow image, so the full-size image never becomes a numpy array and back (0.9 ms
    of a ~7 ms decode + resize of a 768 px Savoias JPEG here); a patch-policy image's limits are checked before it
    is resized."""
    rgb, size = _decode_image(source, prep)
    check_patch_limits(rgb.height, rgb.width, prep)
    height, width = fitted_size(rgb.height, rgb.width, prep)
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), _FILTERS[prep.interpolation])
    return np.asarray(rgb, dtype=np.uint8), size


def _path_problem(path, e: OSError | ValueError) -> str:
    """What ``icrt score`` reports for an image path that could not be opened or stat'ed (``e``)."""
    import errno

    if isinstance(e, ValueError):  # a NUL byte in the name
        return "no such file"
    if isinstance(e, (FileNotFoundError, NotADirectoryError)):
        if os.path.islink(path):
            return SYMLINK_LOOP if is_symlink_loop(path) else "broken symbolic link"
        return "no such file"
    if isinstance(e, PermissionError):
        return "permission denied"
    return SYMLINK_LOOP if e.errno == errno.ELOOP else (e.strerror or str(e))


def _file_problem(st) -> str | None:
    import stat

    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not an image"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


def check_image_file(path) -> int:
    """The size of the image file ``path``; ImageError (the problem ``icrt score`` reports) for a folder, a missing
    file or broken link, a symlink loop, a FIFO or device (it would block or never end), an empty file, or a file
    that cannot be reached (a folder on the way that may not be searched: ``permission denied``). A check only: what
    opens the file afterwards should use :func:`open_image_file`, which checks what it opened."""
    name = os.fspath(path)
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise ImageError(name, _path_problem(path, e)) from None
    problem = _file_problem(st)
    if problem:
        raise ImageError(name, problem)
    return st.st_size


def open_image_file(path):
    """The image file ``path`` opened for reading, as a binary file object; ImageError as :func:`check_image_file`.

    Opened once, with ``O_NONBLOCK``, and checked through its descriptor (``fstat``): a name swapped for a FIFO or a
    device after any earlier check is refused here instead of blocking the decoder for ever (open with
    ``O_NONBLOCK`` returns at once on a FIFO without a writer). ``O_NONBLOCK`` is cleared before the file is read."""
    import fcntl

    name = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as e:
        raise ImageError(name, _path_problem(path, e)) from None
    try:
        problem = _file_problem(os.fstat(fd))
        if problem:
            raise ImageError(name, problem)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _decode(source, prep: Preprocessing | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    rgb, size = _decode_image(source, prep)
    return np.asarray(rgb, dtype=np.uint8), size


def _decode_image(source, prep: Preprocessing | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(the decoded RGB Pillow image, (width, height) of the full image); ImageError naming the file and problem.
    ``prep``: a JPEG is decoded at the DCT scale its policy allows (:func:`draft_scale`; None: full size)."""
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<bytes>")
    if isinstance(source, (str, os.PathLike)):
        with open_image_file(source) as f:
            return _decode_named(f, name, prep)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(name, "empty file (0 bytes)")
        source = io.BytesIO(source)
    return _decode_named(source, name, prep)


def _decode_named(source, name: str, prep: Preprocessing | None) -> tuple[Image.Image, tuple[int, int]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                full = im.size
                scale = draft_scale(*full, prep) if prep is not None and im.format == "JPEG" else 1
                if scale > 1:  # DCT-domain downscale by exactly 1/scale (Pillow picks it from the size asked for)
                    im.draft("RGB", (full[0] // scale, full[1] // scale))
                drafted = im.size
                im.load()  # decode first: a broken pixel stream must fail here, not be hidden below
                try:
                    if im.getexif().get(ExifTags.Base.Orientation, 1) in _TRANSPOSED:  # else exif_transpose copies
                        im = ImageOps.exif_transpose(im)
                except Exception:  # a corrupt EXIF block must not lose the image: keep it unrotated
                    pass
                rgb = to_rgb(im)
    except Exception as e:
        raise ImageError(name, decode_problem(e)) from None
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(name, "image has no pixels")
    size = full if rgb.size == drafted else (full[1], full[0])  # EXIF rotation swapped the sides
    return rgb, size


def decode_problem(e: Exception) -> str:
    """What a failure to decode an image (``e``, from Pillow or the file under it) is called in an error record."""
    if isinstance(e, ImageError):
        return e.problem
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"image too large (decompression-bomb limit): {e}"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, MemoryError):
        return "out of memory while decoding"
    if isinstance(e, OSError):
        msg = str(e)
        if "cannot identify image file" in msg:
            return "not a recognised image format"
        if "truncated" in msg.lower() or "broken data stream" in msg.lower():
            return f"truncated or corrupt image data ({e})"
        return msg
    if isinstance(e, ValueError) and "closed image" in str(e):
        return "the Pillow image is closed"
    return f"cannot decode image ({type(e).__name__}: {e})"


def pillow_rgb(im: Image.Image, name: str) -> Image.Image:
    """A Pillow image handed over as it is (perhaps opened lazily, not yet decoded) as RGB; ImageError as for a file:
    data that is truncated or corrupt, a closed image, no pixels."""
    try:
        im.load()
        rgb = to_rgb(im)
    except Exception as e:
        raise ImageError(name, decode_problem(e)) from None
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(name, "image has no pixels")
    return rgb


# --- geometry ---------------------------------------------------------------------------------


def resize(img: np.ndarray, width: int, height: int, interpolation: str = "bilinear") -> np.ndarray:
    if img.shape[1] == width and img.shape[0] == height:
        return img
    pil = Image.fromarray(img).resize((int(width), int(height)), _FILTERS[interpolation])
    return np.asarray(pil, dtype=np.uint8)


@functools.lru_cache(maxsize=16)
def _lookup(mean: tuple, std: tuple) -> np.ndarray:
    """3 x 256 table: the normalised value of every uint8 level, per channel."""
    levels = np.arange(256, dtype=np.float32)[None, :] * np.float32(1.0 / 255.0)
    table = (levels - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]
    return table.astype(np.float32)


def normalize(img: np.ndarray, mean, std) -> np.ndarray:
    """HxWx3 uint8 (or NxHxWx3) -> float32 channels-first, (x/255 - mean) / std.

    A 256-entry table per channel on the channels-first uint8 copy: the same values as the arithmetic
    (within 1 ulp), ~6x faster (0.8 vs 5.5 ms at 384 x 384 here), which matters next to a 25 ms model."""
    table = _lookup(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    chw = np.ascontiguousarray(np.moveaxis(np.asarray(img, np.uint8), -1, -3))
    out = np.empty(chw.shape, np.float32)
    for c in range(3):
        np.take(table[c], chw[..., c, :, :], out=out[..., c, :, :], mode="clip")  # "raise" buffers out: ~3x slower
    return out


def geometry(img: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """The resize step alone (uint8 out): square resize, or the patch-policy fit (:func:`fitted_size`). Idempotent."""
    height, width = fitted_size(img.shape[0], img.shape[1], prep)
    return resize(img, width, height, prep.interpolation)


class PatchInputs:
    """The model inputs of one patch-policy image, normalised slice by slice from the fitted uint8 image.

    Behaves like the N x 3 x S x S array for ``len()`` and slicing, so a batcher can take a few patches at a
    time: memory is the fitted image plus one batch, not N float32 crops (a 12 MP photo has ~2,700 patches of
    224 px: 1.6 GB as one array).
    """

    def __init__(self, fitted: np.ndarray, positions: list[tuple[int, int]], prep: Preprocessing,
                 pixels: bool = False):
        self.fitted, self.positions, self.prep, self.pixels = fitted, positions, prep, pixels

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index) -> np.ndarray:
        pos = self.positions[index] if isinstance(index, slice) else [self.positions[index]]
        s = self.prep.size
        crops = np.stack([self.fitted[t : t + s, x : x + s] for t, x in pos])
        out = crops if self.pixels else normalize(crops, self.prep.mean, self.prep.std)
        return out if isinstance(index, slice) else out[0]

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)


def check_patch_limits(height: int, width: int, prep: Preprocessing) -> None:
    """ImageError for an image whose patch scoring would need too much memory or work."""
    if prep.resize != "patches":
        return
    fh, fw = fitted_size(height, width, prep)
    if fh * fw > MAX_FITTED_PIXELS:
        raise ImageError("<image>", f"a {width}x{height} image is {fw}x{fh} px once fitted to {prep.size} px patches "
                         f"(limit {MAX_FITTED_PIXELS // 1_000_000} MP): too elongated for patch scoring")
    n = patch_count(height, width, prep)
    if n > MAX_PATCHES:
        raise ImageError("<image>", f"a {width}x{height} image needs {n} patches of {prep.size} px "
                         f"(limit {MAX_PATCHES}): too large or too elongated for patch scoring")


def model_inputs(img: np.ndarray, prep: Preprocessing, pixels: bool = False):
    """RGB uint8 image -> (inputs, patch positions), where inputs is a 1 x 3 x S x S array (``square``) or a
    :class:`PatchInputs` (``patches``: one input per grid patch, made on demand).

    ``pixels``: the inputs as N x S x S x 3 uint8 pixels, resized but not normalised, for a backend that normalises
    inside its model (``Backend.takes_pixels``): the same values once normalised, 4x fewer bytes, and the
    normalisation runs in the engine's kernels instead of numpy's."""
    check_patch_limits(img.shape[0], img.shape[1], prep)
    img = geometry(img, prep)
    if prep.resize == "square":
        return (img[None] if pixels else normalize(img, prep.mean, prep.std)[None]), [(0, 0)]
    pos = patch_grid(img.shape[0], img.shape[1], prep.size, prep.stride)
    return PatchInputs(img, pos, prep, pixels), pos


def to_model_input(img: np.ndarray, prep: Preprocessing, pixels: bool = False) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """RGB uint8 image -> (N x 3 x size x size float32 batch, patch positions), all inputs at once
    (``pixels``: N x size x size x 3 uint8, see :func:`model_inputs`).

    ``square``: one input, position [(0, 0)]. ``patches``: one input per grid patch.
    """
    x, pos = model_inputs(img, prep, pixels)
    return (x if isinstance(x, np.ndarray) else x[:]), pos


def pool_scores(scores: np.ndarray, prep: Preprocessing) -> float:
    return float(np.mean(scores))
