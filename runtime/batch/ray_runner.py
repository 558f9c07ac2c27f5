"""The ``ray`` runner of ``icrt batch`` (Ray Data's batch-inference idiom around the runtime's Scorer):
``ray.data.read_binary_files(paths, include_paths=True)`` -> ``map_batches(ScoreActor)`` on an actor pool (one
``Scorer`` per actor, CPU or GPU) -> rows streamed back to this process, which writes the parts. The actors decode
the bytes with icrt's own decoder, so scores and error texts equal ``icrt score``'s. Files that cannot be read as
files at all (missing, folders, FIFOs, broken links) get their error rows here, with the texts ``icrt score`` gives,
and are never handed to Ray (a missing file would fail Ray's whole read). An actor pool that cannot be placed next
to its read tasks is refused before it starts (:func:`ray_budget`).
"""
from __future__ import annotations

import logging
import math
import os
import time

from icrt.runtime.base.errors import IcrtError, UnavailableError
from icrt.runtime.base.hardware import usable_cpus
from icrt.runtime.batch.watchdog import StalledError, Watchdog
from icrt.runtime.bundle.records import IMAGE, error_record, parquet_name, records_table
from icrt.runtime.scoring.inputs import uri_filesystem

log = logging.getLogger("icrt")

DEFAULT_RAY_BATCH = 16  # images per Ray task given to one actor (64 brought the first rows ~4 s later, more memory)
READ_CPUS = 0.25  # CPUs one Ray read task reserves (Ray's default, 1, starves actors on small machines)
READ_RESERVE = 2 * READ_CPUS  # CPUs kept free of actors, so that reading always goes on


def path_problem(path: str, problems: dict) -> str | None:
    """Why ``path`` cannot even be read as a file, in the words ``icrt score`` uses (runtime.scoring.preprocess), or
    None. Only such files are kept from Ray: its read of a missing file or a folder fails the whole run."""
    from icrt.runtime.scoring.preprocess import ImageError, open_image_file

    if path in problems:
        return problems[path]
    try:
        open_image_file(path).close()  # opened once, checked through the descriptor (a FIFO never blocks)
    except ImageError as e:
        return e.problem
    return None



class ScoreActor:
    """``map_batches`` callable class: one Scorer per Ray actor. Input batches (pyarrow) have ``path`` and
    ``bytes`` (Ray's names); output rows are records (``runtime.bundle.records.records_table``), ``image`` as given."""

    def __init__(self, options):
        from icrt.runtime.scoring.scorer import Scorer
        self.scorer = Scorer.open(options.replace(workers=1))

    def __call__(self, batch):
        names = batch.column("path").to_pylist()
        data = batch.column("bytes").to_pylist()
        readable = [i for i, b in enumerate(data) if b is not None]
        recs = [error_record(n, "cannot read the file") for n in names]
        for i, rec in zip(readable, self.scorer.iter_score([data[i] for i in readable])):
            recs[i] = rec
        return records_table(recs, names)


def _read_named(row):
    """Ray ``map`` for names pyarrow cannot carry (not UTF-8): read the file by its bytes name."""
    try:
        with open(row["name"], "rb") as f:
            data = f.read()
    except OSError:
        data = None
    return {"bytes": data, "path": row["path"]}


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        from icrt.runtime.base.install import extra_hint

        raise UnavailableError(f"--runner ray needs Ray Data; {extra_hint('scale')}") from None
    return ray


def ray_budget(job, resources: dict, node_cpus: float) -> tuple[float, float, int]:
    """(CPUs per actor, GPUs per actor, onnxruntime threads per Scorer) for ``job`` (a ``runtime.batch.job.Job``),
    checked against the cluster: the actors
    and :data:`READ_RESERVE` CPUs for reading must fit, else UnavailableError (a pool that cannot be placed
    would wait forever)."""
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    w = job.workers
    gpw = float(job.gpus_per_worker or 0)
    if gpw and w * gpw > gpus + 1e-9:
        raise UnavailableError(f"--workers {w} x --gpus-per-worker {gpw:g} = {w * gpw:g} GPUs, but the Ray cluster has "
                               f"{gpus:g}: lower --workers or --gpus-per-worker")
    cpw = job.cpus_per_worker
    if cpw is None:
        cpw = (cpus - READ_RESERVE) / w
        cpw = min(cpw, node_cpus - READ_RESERVE, 1.0 if gpw else cpw)
        cpw = math.floor(cpw * 100) / 100
    if cpw <= 0 or w * cpw + READ_RESERVE > cpus + 1e-9:
        raise UnavailableError(
            f"--workers {w} x {cpw:g} CPUs per worker and {READ_RESERVE:g} CPUs for reading need "
            f"{w * max(cpw, 0) + READ_RESERVE:g} CPUs, but the Ray cluster has {cpus:g}: the read tasks would wait "
            "for CPUs forever; lower --workers or --cpus-per-worker")
    threads = job.scorer.threads or max(1, math.ceil(cpw - 1e-9))
    return cpw, gpw, threads


def _ray_keys(paths: list[str], problems: dict):
    """Split the inputs: (error records for files that cannot be read at all, [what read_binary_files reads],
    {the path Ray gives back: [inputs]}, {escaped name: [inputs]} for local names pyarrow cannot carry)."""
    from icrt.runtime.scoring.inputs import is_uri

    errors, reads, owners, odd = [], [], {}, {}
    for p in paths:
        if is_uri(p):
            _fs, key = uri_filesystem(p)  # Ray gives back the path within the file system (no scheme)
            if key not in owners:
                reads.append(p)
            owners.setdefault(key, []).append(p)
            continue
        problem = path_problem(p, problems)
        if problem:
            errors.append(error_record(p, problem))
            continue
        key = os.path.abspath(p)
        if parquet_name(key) != key:
            odd.setdefault(parquet_name(key), []).append(p)
            continue
        if key not in owners:
            reads.append(key)
        owners.setdefault(key, []).append(p)
    return errors, reads, owners, odd


def _driver_resolves(job) -> dict:
    """What ``job``'s backend resolves to on this machine (the actors open the same one where they run on it; on
    other nodes of a cluster they may differ, which summary.json says)."""
    from icrt.runtime.backends import BackendError, open_backend
    from icrt.runtime.bundle.manifest import BundleError, load_manifest

    try:
        backend = open_backend(load_manifest(job.bundle), job.scorer)
    except (BackendError, BundleError) as e:
        return {"backend": job.backend, "resolved": f"not on the driver ({e})"}
    d = backend.describe()
    return {**d, "resolved": "on the driver (the actors on this machine open the same)"}


def run(job, paths: list[str], problems: dict, writer) -> None:
    """Score ``paths`` on a Ray actor pool; rows go to ``writer`` as they come back."""
    ray = _ray()
    job.extra["ran"] = _driver_resolves(job)
    import pyarrow as pa

    errors, reads, plain, odd = _ray_keys(paths, problems)
    for i in range(0, len(errors), 256):
        writer.add(records_table(errors[i:i + 256]))
    if not reads and not odd:
        return
    started = False
    t0 = time.monotonic()
    if not ray.is_initialized():
        started = True
        _ray_init(ray, job)
    t_init = time.monotonic() - t0
    try:
        ctx = ray.data.DataContext.get_current()
        _quiet_ray(ctx, job)
        resources = ray.cluster_resources()
        node_cpus = max([n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [0])
        cpw, gpw, threads = ray_budget(job, resources, node_cpus)
        job.extra["ray"] = {"version": ray.__version__, "address": job.ray_address or "local",
                            "cluster_cpus": resources.get("CPU", 0), "cluster_gpus": resources.get("GPU", 0),
                            "workers": job.workers, "cpus_per_worker": cpw, "gpus_per_worker": gpw,
                            "threads_per_worker": threads, "read_cpus": READ_CPUS, "images_per_task": job.ray_batch,
                            "start_s": round(t_init, 2)}
        log.info("icrt: Ray %s (%s): %d worker(s) x %g CPU%s, %d onnxruntime thread(s) each; %d file(s) to score",
                 ray.__version__, job.ray_address or f"local, {resources.get('CPU', 0):g} CPUs", job.workers, cpw,
                 f" + {gpw:g} GPU" if gpw else "", threads, len(plain) + len(odd))
        ds = None
        if reads:
            ds = ray.data.read_binary_files(reads, include_paths=True, num_cpus=READ_CPUS)
        if odd:
            items = [{"name": os.fsencode(os.path.abspath(v[0])), "path": k} for k, v in odd.items()]
            more = ray.data.from_items(items).map(_read_named, num_cpus=READ_CPUS)
            ds = more if ds is None else ds.union(more)
        ds = ds.map_batches(
            ScoreActor, fn_constructor_kwargs={"options": job.scorer.replace(model=os.path.abspath(job.bundle),
                                                                             threads=threads)},
            batch_size=job.ray_batch, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=job.workers),
            num_cpus=cpw, num_gpus=gpw or None)
        owners = {**plain, **odd}
        left = len(owners)
        # prefetch_batches=0: blocks are fetched and turned into tables on this thread (no Ray Data formatting
        # threads left holding arrow buffers when the process exits); closed below in every case, which shuts the
        # streaming executor down (and joins its thread) before Ray is
        batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
        table = None
        with Watchdog(job.stall_timeout, " from the Ray workers") as dog:
            try:
                for table in batches:
                    dog.tick()
                    if "first_rows_s" not in job.extra["ray"]:
                        job.extra["ray"]["first_rows_s"] = round(time.monotonic() - t0, 2)
                        job.extra["ray"]["first_rows"] = table.num_rows
                    table, n = _map_back(pa, table, owners)  # a copy in arrow's memory: Ray's block is let go
                    left -= n
                    writer.add(table)
            except KeyboardInterrupt:
                if dog.fired:
                    raise StalledError(dog.message()) from None
                raise
            except Exception as e:
                raise _ray_error(e, dog) from None
            finally:
                batches.close()
                ds = table = None  # nothing of Ray's is held past here
        if left:
            raise IcrtError(f"Ray returned no rows for {left} input(s); the rows written are kept: rerun with --resume")
    finally:
        if started:
            ray.shutdown()


def _map_back(pa, table, owners: dict):
    """Ray paths -> the inputs they were read for (several inputs may name one file); rows for each, always
    taken into new arrays in arrow's own memory (``take`` copies), so that no row kept for a part points into a
    block Ray deserialized (Python-owned buffers that would outlive the Ray run)."""
    keys = table.column(IMAGE).to_pylist()
    take, names = [], []
    found = 0
    for i, k in enumerate(keys):
        inputs = owners.pop(k, None)
        if inputs is None:
            alt = os.path.normpath(k) if not k.startswith("/") else k
            inputs = owners.pop(alt, None) or owners.pop("/" + k, None)
        if inputs is None:
            log.warning("icrt: Ray returned a row for %s, which is no input; dropped", k)
            continue
        found += 1
        for p in inputs:
            take.append(i)
            names.append(parquet_name(p))
    out = table.take(pa.array(take, pa.int64()))
    out = out.set_column(out.schema.get_field_index(IMAGE), IMAGE, pa.array(names, pa.string()))
    return out, found


def _ray_init(ray, job) -> None:
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if job.ray_address:
        try:
            ray.init(address=job.ray_address, **kwargs)
        except Exception as e:
            raise UnavailableError(f"cannot connect to the Ray cluster at {job.ray_address} ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''})") from None
        return
    cpus = job.ray_cpus or usable_cpus()
    # the object store holds images in flight only; bounded, so a small machine keeps its memory
    store = 512 * 1024 * 1024
    ray.init(address="local", num_cpus=cpus, object_store_memory=store, **kwargs)  # always a new one


def _quiet_ray(ctx, job) -> None:
    """Ray Data's own progress output off (icrt draws its own), and its no-progress guard set to ours."""
    for name, value in (("enable_progress_bars", False), ("print_on_execution_start", False),
                        ("enable_auto_log_stats", False), ("execution_no_progress_timeout_s",
                                                           job.stall_timeout if job.stall_timeout > 0 else -1)):
        # (not wait_for_min_actors_s: a positive value makes the executor wait for the actors before it starts
        # any read, so reading no longer overlaps the actors' start; the watchdog covers actors that never start)
        if hasattr(ctx, name):
            setattr(ctx, name, value)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)


def _ray_error(e: Exception, dog: Watchdog) -> IcrtError:
    """A Ray failure -> one line: the stall, or the first line of the root cause."""
    name = type(e).__name__
    if name in ("ExecutionTimeoutError", "TimeoutError") or dog.fired:
        return StalledError(dog.message() + f" [Ray: {str(e).splitlines()[0] if str(e) else name}]")
    cause = e
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = " ".join(str(cause).split())
    if isinstance(cause, IcrtError):
        return type(cause)(text) if type(cause) is not IcrtError else IcrtError(text)
    return IcrtError(f"the Ray run failed ({type(cause).__name__}: {text[:500]}); the rows written are kept: "
                     "rerun with --resume")

