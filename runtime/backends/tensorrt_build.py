"""TensorRT engines built from a bundle's ONNX files, on the machine that will run them (torch-free).

An engine only runs with the TensorRT version (major.minor.patch) it was built with and on the GPU it was built
for, so it is built where it runs: ``icrt build`` on a Jetson or a server, ``python -m export --trt`` on the
exporting machine, both through this module. It uses the TensorRT Python API only; the GPU's name and compute
capability come from cuda-python or pycuda (``runtime.backends.tensorrt.gpu_info``), never torch. ``tensorrt``
and the CUDA bindings are imported inside functions only.

Per TensorRT major version (what each version's Python bindings offer):

- **8.6** (JetPack 6.0): ``create_network(0)`` makes an implicit-batch network, which the ONNX parser refuses, so
  networks get ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``; 8.x has no ``STRONGLY_TYPED``, so every engine is
  weakly typed: fp32 from ``model.onnx``, fp16 from ``model.onnx`` + ``BuilderFlag.FP16``, int8 from the Q/DQ model
  + ``INT8`` + ``FP16``. TensorRT older than 8.6 is refused with one line.
- **10.x** (JetPack 6.1 / 6.2: 10.3): networks are always explicit batch (``EXPLICIT_BATCH`` is deprecated and
  not set); fp32 engines are built strongly typed (``STRONGLY_TYPED``), fp16 / int8 weakly typed with the
  builder flags, as on 8.6.
- **11.x**: every network is strongly typed (``create_network(0)``; ``STRONGLY_TYPED`` is deprecated and ignored,
  the ``FP16`` / ``INT8`` builder flags are gone): fp16 from ``model.fp16.onnx``, int8 from ``model.int8.qdq.onnx``.

``BuilderFlag.TF32`` is on by default (8.6, 10.x, 11.x): it is cleared for fp32 engines, and the manifest says so
(``cleared_builder_flags``), so that an "fp32" engine computes in fp32 like the fp32 parity figures.

Timing cache: one file per TensorRT version and GPU, ``timing.trt<version>.sm<cc>.cache``
(``runtime.bundle.manifest.timing_cache_file_name``). A cache that TensorRT rejects (``set_timing_cache`` returns False:
made by another TensorRT build, or on a GPU with other properties — Orin Nano and AGX Orin are both sm87) is
replaced by an empty one, with a warning; ``get_timing_cache()`` may return None, and then the file is left as
it was.

Writes: all engines are built in memory first; only then are they written, each to a temporary file in the
bundle, renamed into place together with the timing cache, and recorded in the manifest (saved atomically; a
rebuild replaces the entry of the same precision / TensorRT version / GPU and keeps the others). A failed build
leaves the bundle as it was.

Each engine comes with the equivalent ``trtexec`` command line, for people who build engines that way.

NOT RUN ON HARDWARE: no GPU or TensorRT exists on this project's machines. The tests run every line here
against a fake ``tensorrt`` and fake CUDA bindings (tests/fakes) that model the documented differences between
TensorRT 8.6, 10.3 and 11.x; the real libraries have never executed it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from icrt.runtime.backends.tensorrt import cc_compact, cc_key, version_key
from icrt.runtime.base.errors import BundleError, UnavailableError, UserInputError, one_line
from icrt.runtime.base.files import atomic_path
from icrt.runtime.bundle.manifest import EngineRecord, engine_file_name, timing_cache_file_name
from icrt.runtime.bundle.precisions import precision_names

log = logging.getLogger(__name__)

MIN_TENSORRT = (8, 6)  # JetPack 6.0; older versions lack parts of the name-based API used here and in the backend
DEFAULT_MAX_BATCH = 32  # the Scorer's default batch size
DEFAULT_WORKSPACE_MB = 4096


def install_hint() -> str:
    from icrt.runtime.base.install import doc, pip_line

    return ("on a Jetson TensorRT comes with JetPack: sudo apt install nvidia-jetpack, then use a venv made with "
            f"'python3 -m venv --system-site-packages'; elsewhere: {pip_line('trt')} (see {doc('jetson.md')})")


class TensorRTError(UnavailableError):
    """TensorRT missing or too old, no GPU, or a failed parse / build; the message says which."""


# --- versions, names, shapes (no TensorRT needed) ---------------------------------------------------------------


def major(version) -> int:
    return version_key(version)[0]


def profile_shapes(size: int, opt_batch: int, max_batch: int) -> tuple[tuple, tuple, tuple]:
    """(min, opt, max) input shapes of the one optimization profile."""
    max_batch = max(1, int(max_batch))
    opt_batch = min(max(1, int(opt_batch)), max_batch)
    return (1, 3, size, size), (opt_batch, 3, size, size), (max_batch, 3, size, size)


def _file(files, precision: str, key: str):
    entry = files.get(precision) if isinstance(files, Mapping) else None
    return entry.get(key) if isinstance(entry, Mapping) else None


def source_onnx(precision: str, trt_version: str, files) -> tuple[str, list[str]]:
    """Which ONNX file builds the ``precision`` engine, and which builder flags (weak typing: below 11 only)."""
    name = _file(files, precision, "tensorrt")
    if precision != "int8":  # the onnxruntime int8 form (uint8, asymmetric) is no TensorRT input
        name = name or _file(files, precision, "onnxruntime")
    if not name:
        raise TensorRTError(f"no {precision} ONNX file in the bundle to build a TensorRT engine from"
                            + (" (the int8 engine needs the TensorRT form, files.int8.tensorrt: re-export with --int8)"
                               if precision == "int8" and _file(files, "int8", "onnxruntime") else ""))
    if precision == "bf16":  # the fp32 file, TensorRT choosing bf16 kernels (weak typing: 9.x and 10.x only)
        if major(trt_version) >= 11 or major(trt_version) < 9:
            raise TensorRTError(f"TensorRT {trt_version} builds no bf16 engine from an fp32 ONNX file (the BF16 "
                                "builder flag is in TensorRT 9 and 10; 11 takes only bf16-typed files, which icrt does "
                                "not write): build fp16 instead")
        return source_onnx("fp32", trt_version, files)[0], ["BF16"]
    if major(trt_version) >= 11:
        return name, []
    if precision == "fp16":
        return source_onnx("fp32", trt_version, files)[0], ["FP16"]  # weak typing: TensorRT picks fp16 kernels
    if precision == "int8":
        return name, ["INT8", "FP16"]
    return name, []


@dataclass(frozen=True)
class Recipe:
    """How one engine is built on one TensorRT version."""

    precision: str
    onnx: str  # the bundle's ONNX file
    builder_flags: tuple = ()  # BuilderFlag names set
    cleared_builder_flags: tuple = ()  # BuilderFlag names cleared (on by default)
    network_flags: tuple = ()  # NetworkDefinitionCreationFlag names
    strongly_typed: bool = False


def recipe(precision: str, trt_version: str, files) -> Recipe:
    """The ONNX file, network flags and builder flags of the ``precision`` engine on TensorRT ``trt_version``."""
    onnx, flags = source_onnx(precision, trt_version, files)
    m = major(trt_version)
    if m >= 11:  # always strongly typed; STRONGLY_TYPED is deprecated (ignored) and not passed
        network, strongly = (), True
    elif m >= 10:  # always explicit batch; strongly typed when no weak-typing flag is wanted
        strongly = not flags
        network = ("STRONGLY_TYPED",) if strongly else ()
    else:  # 8.6: implicit batch unless asked; no strong typing
        network, strongly = ("EXPLICIT_BATCH",), False
    cleared = ("TF32",) if precision == "fp32" else ()
    return Recipe(precision, onnx, tuple(flags), cleared, network, strongly)


def engine_entry(precision: str, file: str, trt_version: str, cc, shapes, onnx_file: str, flags,
                 strongly_typed: bool | None = None, **details) -> EngineRecord:
    """The manifest ``engines`` entry (``details``: the record's other fields, e.g. ``gpu``)."""
    (mn, opt, mx) = shapes
    if strongly_typed is None:
        strongly_typed = major(trt_version) >= 11 or (major(trt_version) >= 10 and not flags)
    return EngineRecord(precision=precision, file=file, onnx=onnx_file, tensorrt=str(trt_version),
                        compute_capability=cc_key(cc), min_batch=mn[0], opt_batch=opt[0], max_batch=mx[0],
                        strongly_typed=bool(strongly_typed), builder_flags=list(flags), **details)


def trtexec_command(onnx_path: str, engine_path: str, cache_path: str, input_name: str, shapes, rec: Recipe,
                    workspace_mb: int, trt_version: str) -> str:
    """The trtexec command line that builds the same engine (trtexec's options of that TensorRT version)."""
    dims = "x".join
    (mn, opt, mx) = ([str(d) for d in s] for s in shapes)
    parts = ["trtexec", f"--onnx={shlex.quote(onnx_path)}", f"--saveEngine={shlex.quote(engine_path)}",
             f"--minShapes={input_name}:{dims(mn)}", f"--optShapes={input_name}:{dims(opt)}",
             f"--maxShapes={input_name}:{dims(mx)}", f"--memPoolSize=workspace:{int(workspace_mb)}",  # MiB
             f"--timingCacheFile={shlex.quote(cache_path)}"]
    if "STRONGLY_TYPED" in rec.network_flags:  # 10.x; on 11.x strong typing is the default
        parts.append("--stronglyTyped")
    parts += [f"--{f.lower()}" for f in rec.builder_flags]  # --fp16, --int8 (8.6, 10.x)
    if "TF32" in rec.cleared_builder_flags:
        parts.append("--noTF32")
    parts.append("--skipInference")
    return " ".join(parts)


def usual_batch(prep) -> int:
    """Model inputs of a typical image (the profile's opt batch): 1 for square models, the patches of a
    640 x 480 image for patch models."""
    if prep.resize == "square":
        return 1
    from icrt.runtime.bundle.preprocessing import patch_count

    return patch_count(480, 640, prep)


# --- TensorRT and the GPU -------------------------------------------------------------------------------------


def require_tensorrt():
    """The tensorrt module (8.6 or newer); TensorRTError with the way to get it otherwise."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTError("building TensorRT engines needs the tensorrt Python package and an NVIDIA GPU; it is "
                            f"not installed here ({install_hint()})") from None
    except Exception as e:  # installed, but its libraries (libnvinfer) or CUDA do not load: OSError, RuntimeError, ...
        raise TensorRTError(f"the tensorrt Python package is installed but does not load ({type(e).__name__}: "
                            f"{one_line(e)[:300]}); check the TensorRT / CUDA install ({install_hint()})") from None
    version = str(getattr(trt, "__version__", "0"))
    if version_key(version)[:2] < MIN_TENSORRT:
        raise TensorRTError(f"TensorRT {version} is too old: icrt builds engines with TensorRT "
                            f"{'.'.join(map(str, MIN_TENSORRT))} (JetPack 6.0) or newer")
    return trt


def gpu(device_id: int = 0) -> tuple[str, str, str]:
    """(name, compute capability 'major.minor', binding) of the GPU engines are built for; TensorRTError without one."""
    from icrt.runtime.backends.base import BackendError
    from icrt.runtime.backends.tensorrt import gpu_info

    try:
        return gpu_info(device_id)
    except BackendError as e:
        raise TensorRTError(f"building TensorRT engines needs an NVIDIA GPU: {e}") from None


class TimingCache:
    """The bundle's timing cache for one TensorRT version and GPU, held in memory while engines are built."""

    def __init__(self, folder: str, name: str):
        self.name, self.path = name, os.path.join(folder, name)
        self.blob = b""
        if os.path.isfile(self.path):
            with open(self.path, "rb") as f:
                self.blob = f.read()
        self.loaded = bool(self.blob)
        self.changed = False
        self.notes: list[str] = []

    def _note(self, text: str) -> None:
        if text not in self.notes:
            log.warning(text)
            self.notes.append(text)

    def attach(self, config):
        """Give ``config`` the cache (an empty one when TensorRT rejects the stored one); the ITimingCache, which
        must live until the build ends, or None when TensorRT takes none."""
        cache = None
        if self.blob:
            try:
                cache = config.create_timing_cache(self.blob)
            except Exception:  # a corrupt file: TensorRT may raise instead of returning None
                cache = None
            if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
                cache = None
            if cache is None:
                self._note(f"{self.name}: TensorRT rejected this timing cache (made by another TensorRT build or on "
                           "a GPU with other properties); starting with an empty one")
                self.blob = b""
        if cache is None:
            cache = config.create_timing_cache(b"")
            if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
                self._note("TensorRT did not accept an empty timing cache; building without one")
                return None
        return cache

    def collect(self, config) -> None:
        """Keep the timing cache ``config`` holds after a build (get_timing_cache() may return None)."""
        cache = config.get_timing_cache()
        data = cache.serialize() if cache is not None else None
        if data is None:
            self._note("TensorRT returned no timing cache to save; the cache file is left as it was")
            return
        blob = bytes(memoryview(data))
        if blob:
            self.blob, self.changed = blob, True


def build_engine(trt, onnx_path: str, input_name: str, shapes, rec: Recipe, workspace_mb: int,
                 timing: TimingCache | None = None):
    """Parse ``onnx_path`` and build one serialized engine (TensorRT's IHostMemory, a buffer); TensorRTError when
    TensorRT cannot parse or build it."""
    version = str(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    net_flags = 0
    for name in rec.network_flags:
        flag = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if flag is None:
            raise TensorRTError(f"TensorRT {version} has no network flag {name} (building {rec.precision})")
        net_flags |= 1 << int(flag)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)  # owns the weights: alive (a local) until the build is done
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no details"
        raise TensorRTError(f"{onnx_path}: TensorRT {version} could not parse the ONNX file: {one_line(errors)}")
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if input_name not in inputs:
        raise TensorRTError(f"{onnx_path}: the model's inputs are {inputs}, not {input_name!r}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in rec.builder_flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise TensorRTError(f"TensorRT {version} has no builder flag {name} (building {rec.precision})")
        config.set_flag(flag)
    for name in rec.cleared_builder_flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is not None:
            config.clear_flag(flag)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)
    cache = timing.attach(config) if timing is not None else None  # noqa: F841 - alive until the build ends
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"{onnx_path}: TensorRT {version} could not build the {rec.precision} engine "
                            "(see the TensorRT messages above)")
    if timing is not None:
        timing.collect(config)
    return plan


# --- building a set of engines ----------------------------------------------------------------------------------


@dataclass
class BuiltEngine:
    entry: EngineRecord  # the manifest engines entry
    plan: object  # the serialized engine (a buffer)
    trtexec: str  # the equivalent trtexec command line
    seconds: float


@dataclass
class EngineBuild:
    """What one run built (in memory until :func:`write_build`)."""

    folder: str
    tensorrt: str
    gpu: str
    compute_capability: str
    cuda_binding: str
    timing: TimingCache
    engines: list = field(default_factory=list)  # [BuiltEngine]

    @property
    def entries(self) -> list[EngineRecord]:
        return [e.entry for e in self.engines]

    @property
    def notes(self) -> list[str]:
        return list(self.timing.notes)


def build_plans(folder: str, files, precisions, input_name: str, size: int, opt_batch: int,
                max_batch: int = DEFAULT_MAX_BATCH, workspace_mb: int = DEFAULT_WORKSPACE_MB) -> EngineBuild:
    """Build one engine per precision from the ONNX files in ``folder`` (``files``: the manifest's files),
    in memory; nothing is written."""
    trt = require_tensorrt()
    name, cc, binding = gpu()
    version = str(trt.__version__)
    shapes = profile_shapes(size, opt_batch, max_batch)
    recipes = [recipe(p, version, files) for p in precisions]  # every source known before the first (slow) build
    for rec in recipes:
        onnx_path = os.path.join(folder, rec.onnx)
        if not os.path.isfile(onnx_path):
            raise BundleError(f"{folder}: {rec.onnx} (the {rec.precision} engine's source) is missing")
    # A bundle is untrusted: a link named like an output could make the writes land outside it.
    outputs = [engine_file_name(r.precision, version, cc_compact(cc)) for r in recipes]
    for out in outputs + [timing_cache_file_name(version, cc_compact(cc))]:
        path = os.path.join(folder, out)
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            raise BundleError(f"{path}: a symbolic link or not a regular file; engines and timing caches are "
                              "written only as regular files of the bundle (remove it first)")
    timing = TimingCache(folder, timing_cache_file_name(version, cc_compact(cc)))
    build = EngineBuild(folder, version, name, cc_key(cc), binding, timing)
    for rec in recipes:
        file = engine_file_name(rec.precision, version, cc_compact(cc))
        onnx_path = os.path.join(folder, rec.onnx)
        log.info(f"{file}: building from {rec.onnx} on {name} (sm {cc_key(cc)}), TensorRT {version}"
                 + (f", flags {' '.join(rec.builder_flags)}" if rec.builder_flags else "")
                 + (", strongly typed" if rec.strongly_typed else ""))
        t0 = time.time()
        plan = build_engine(trt, onnx_path, input_name, shapes, rec, workspace_mb, timing)
        seconds = time.time() - t0
        entry = engine_entry(rec.precision, file, version, cc, shapes, rec.onnx, rec.builder_flags,
                             rec.strongly_typed, cleared_builder_flags=list(rec.cleared_builder_flags),
                             network_flags=list(rec.network_flags), gpu=name, timing_cache=timing.name,
                             workspace_mb=int(workspace_mb))
        cmd = trtexec_command(onnx_path, os.path.join(folder, file), timing.path, input_name, shapes, rec,
                              workspace_mb, version)
        build.engines.append(BuiltEngine(entry, plan, cmd, seconds))
        log.info(f"{file}: built in {seconds:.1f} s")
    return build


def write_build(build: EngineBuild) -> list[str]:
    """Write the engines and the timing cache into the folder: each to a temporary file first, all renamed into
    place only when every one is written (a failed write leaves the folder as it was). The paths that did not
    exist before (for the caller to remove if a later step fails)."""
    items = [(os.path.join(build.folder, e.entry.file), e.plan) for e in build.engines]
    if build.timing.changed and build.timing.blob:
        items.append((build.timing.path, build.timing.blob))
    created = [p for p, _ in items if not os.path.lexists(p)]
    with contextlib.ExitStack() as stack:
        for path, data in items:
            tmp = stack.enter_context(atomic_path(path))
            with open(tmp, "wb") as f:
                f.write(memoryview(data))
    return created


def build_engines(folder: str, files, precisions, input_name: str, size: int, opt_batch: int,
                  max_batch: int = 64, workspace_mb: int = DEFAULT_WORKSPACE_MB) -> list[dict]:
    """Build one engine per precision into ``folder`` (``python -m export --trt``: the staging folder, whose
    manifest is written afterwards); the manifest ``engines`` entries. The trtexec lines are logged."""
    build = build_plans(folder, files, precisions, input_name, size, opt_batch, max_batch, workspace_mb)
    write_build(build)
    for e in build.engines:
        log.info(f"{e.entry.file}: the same with trtexec: {e.trtexec}")
    return build.entries


# --- icrt build: engines into an existing bundle ------------------------------------------------------------------


def _same_target(a: EngineRecord, b: EngineRecord) -> bool:
    """Same precision, TensorRT version (major.minor.patch) and GPU compute capability."""
    try:
        return (a.precision == b.precision and version_key(a.tensorrt or "") == version_key(b.tensorrt or "")
                and cc_key(a.compute_capability or "0.0") == cc_key(b.compute_capability or "0.0"))
    except (TypeError, ValueError):
        return False


def build_bundle(bundle: str, precisions=None, max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int | None = None,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB) -> EngineBuild:
    """Build engines for this machine's GPU into the bundle folder ``bundle`` and record them in its manifest.

    ``precisions``: default every precision the bundle has. An existing engine of the same precision, TensorRT
    version and GPU is replaced (its entry, and its file when the name changed); other engines are kept. Nothing
    in the bundle changes unless every engine was built.
    """
    from icrt.runtime.base.files import folder_problem
    from icrt.runtime.bundle.manifest import load_manifest

    m = load_manifest(bundle)
    root = m.root
    have = m.precisions()
    qdq = _file(m.files, "int8", "tensorrt")  # an int8 engine needs the Q/DQ form (the shipped model has none)
    has_qdq = isinstance(qdq, str) and os.path.isfile(m.path(qdq, "files.int8.tensorrt"))
    buildable = [p for p in have if p != "int8" or has_qdq]
    precisions = list(dict.fromkeys(precisions or buildable))
    unknown = [p for p in precisions if p not in precision_names()]
    if unknown:
        raise UserInputError(f"unknown precision {', '.join(unknown)} (choose from {', '.join(precision_names())})")
    missing = [p for p in precisions if p not in have]
    if missing:
        raise BundleError(f"{root}: no {', '.join(missing)} model in this bundle (has: {', '.join(have) or 'none'})")
    if "int8" in precisions and "int8" not in buildable:
        raise BundleError(f"{root}: a TensorRT int8 engine needs the bundle's Q/DQ int8 model (files.int8.tensorrt, "
                          f"{qdq or 'model.int8.qdq.onnx'}), which " + ("is missing" if qdq else "it does not have")
                          + "; re-export with --int8")
    if max_batch < 1 or workspace_mb < 1 or (opt_batch is not None and opt_batch < 1):
        raise UserInputError("--max-batch, --opt-batch and --workspace must be positive")
    problem = folder_problem(root)
    if problem:
        raise UserInputError(f"{root}: cannot write engines into this bundle: {problem}")
    opt = min(opt_batch or usual_batch(m.preprocessing), max_batch)

    build = build_plans(root, m.files, precisions, m.input_name, m.input_size, opt, max_batch, workspace_mb)

    new = build.entries
    kept, replaced = [], []
    for e in m.engines:
        (replaced if any(_same_target(e, n) for n in new) else kept).append(e)
    in_use = {e.file for e in kept + new}
    stale = {e.file for e in replaced} - in_use
    m.engines = kept + new
    m.validate()  # before anything is written
    created = write_build(build)
    try:
        # the new engines only: the rest keep the sums they were given; a bundle that had none gets every file's,
        # as a table of digests must cover every file it names (runtime.bundle.manifest)
        m.record_checksums([e.file for e in new] if m.sha256 else None)
        m.save()
    except BaseException:
        for p in created:
            with contextlib.suppress(OSError):
                os.remove(p)
        raise
    for name in stale:  # replaced engines built under another file name (e.g. another TensorRT build number)
        with contextlib.suppress(OSError, BundleError):
            os.remove(m.path(name))
    return build
