"""``icrt batch``: score a large collection into Parquet parts, on one machine or a Ray cluster, resumably: the
job (:class:`Job`, :func:`run_batch`); the folder, its parts, the runners, the watchdog and the summary are the
other modules of this package.

Output folder (``--out DIR``, ``runtime.batch.layout``), every file written atomically (``runtime.base.files``: a
temporary file in DIR, then a rename, so no reader ever sees half a file):

- ``part-NNNNNN.parquet``: one row per input, the score record's columns (``runtime.bundle.records``: ``image``,
  ``score``, ``error``, ``width``, ``height``, ``patches``); a file that could not be scored has ``error`` set (the
  text ``icrt score`` gives) and nulls in the other columns. A part exists only complete: the parts *are* the
  record of finished work.
- ``run.json``: what the run scores with (bundle, precision, model digests), checked when the run is resumed, and
  where its images were (``runtime.batch.origin``: what ``icrt report`` may show).
- ``summary.json``: counts, errors, score quantiles and histogram, images/s, the bundle's name and versions.
- ``_SUCCESS``: the completion marker, written last.

Runners (``--runner``; a TensorRT plan is what icrt calls an engine):

- ``local`` (``runtime.batch.local_runner``): the runtime's ``Scorer`` (its own batching and decode-ahead thread)
  in this process; records are written part by part as they come (at most one part's rows in memory).
- ``ray`` (``runtime.batch.ray_runner``): ``ray.data.read_binary_files(paths, include_paths=True)`` ->
  ``map_batches(ScoreActor)`` on an actor pool (one ``Scorer`` per actor, CPU or GPU) -> rows streamed back to
  this process, which writes the parts. The
  actors decode the bytes with icrt's own decoder, so scores and error texts equal ``icrt score``'s. Files that
  cannot be read as files at all (missing, folders, FIFOs, broken links) get their error rows here, with the
  texts ``icrt score`` gives, and are never handed to Ray (a missing file would fail Ray's whole read).

``--resume`` keeps the rows of the parts already in DIR and skips their paths; a run killed at any moment loses
at most the rows of the part it was filling, and the resumed run ends with exactly one row per input.

A run that cannot make progress fails with a clear message instead of hanging: a watchdog stops it when no row
has come for ``--stall-timeout`` seconds (and Ray Data's own no-progress guard gets the same limit), and a Ray
actor pool that cannot be placed next to its read tasks is refused before it starts (the feasibility note of
issue 14: two 1-CPU actors on 2 CPUs starved the read task forever).
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import sys
import time

from icrt.runtime.base.errors import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, UserInputError
from icrt.runtime.batch.folder import model_identity, prepare_out
from icrt.runtime.batch.origin import inputs_root
from icrt.runtime.batch.parts import DEFAULT_PART_ROWS, MAX_PART_ROWS, PartWriter, require_pyarrow
from icrt.runtime.batch.ray_runner import DEFAULT_RAY_BATCH
from icrt.runtime.batch.summary import write_summary
from icrt.runtime.batch.watchdog import DEFAULT_STALL_TIMEOUT
from icrt.runtime.bundle.records import parquet_name
from icrt.runtime.scoring.options import ScorerOptions
from icrt.runtime.tools.progress import Progress

log = logging.getLogger("icrt")



RUNNERS = ("local", "ray")  # runtime.batch.<name>_runner: run(job, paths, problems, writer)


@dataclasses.dataclass
class Job:
    out: str
    scorer: ScorerOptions  # every Scorer of the run (local, or one per Ray actor) is opened from these
    runner: str = "local"  # one of RUNNERS
    ray_address: str | None = None
    ray_cpus: int | None = None  # CPUs of the local Ray started without --ray-address
    workers: int = 1  # local: decode threads; ray: actors
    ray_batch: int = DEFAULT_RAY_BATCH  # images per Ray task
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0
    part_rows: int = DEFAULT_PART_ROWS
    resume: bool = False
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    bundle_name: str = ""
    bundle_kind: str = ""
    versions: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)  # facts for summary.json (Ray resources, ...)

    @property
    def bundle(self) -> str:
        return self.scorer.model

    @property
    def precision(self) -> str:
        return self.scorer.precision

    @property
    def backend(self) -> str:
        return self.scorer.backend


def run_batch(job: Job, paths: list[str], problems: dict, shard=None) -> int:
    """Score ``paths`` into ``job.out``; the exit code (0: no error rows in DIR, 1: some)."""
    from icrt.runtime.bundle.manifest import load_manifest

    require_pyarrow()
    if not 0 < job.part_rows <= MAX_PART_ROWS:  # a resume refuses larger parts as not icrt's (crafted ones)
        raise UserInputError(f"--part-rows must be 1 .. {MAX_PART_ROWS:,}, got {job.part_rows}")
    job.scorer = job.scorer.replace(model=job.scorer.bundle())  # the default bundle, when none is named
    m = load_manifest(job.bundle)
    if job.precision not in m.precisions():
        raise UserInputError(f"precision {job.precision} is not in the bundle (it has {', '.join(m.precisions())})")
    job.bundle_name, job.bundle_kind, job.versions = m.name, m.kind, dict(m.versions or {})
    job.extra["score_range"] = list(m.score_range)
    job.extra["model"] = model_identity(m, job.precision)
    job.extra["inputs_root"] = inputs_root(paths)  # where the images are, for run.json (icrt report)
    try:
        done = prepare_out(job)
        return _run(job, paths, problems, shard, done)
    finally:
        lock = job.extra.pop("lock", None)
        if lock is not None:
            lock.close()


def _run(job: Job, paths: list[str], problems: dict, shard, done: set) -> int:
    todo = [p for p in paths if parquet_name(p) not in done] if done else paths
    skipped = len(paths) - len(todo)
    if skipped:
        log.info("icrt: --resume: %d of %d input(s) already scored in %s, %d to go", skipped, len(paths), job.out,
                 len(todo))
    t0 = time.monotonic()
    with Progress(len(todo)) as bar:
        writer = PartWriter(job.out, job.part_rows, progress=bar)
        if todo:
            importlib.import_module(f"{__package__}.{job.runner}_runner").run(job, todo, problems, writer)
        writer.close()
    seconds = time.monotonic() - t0
    summary = write_summary(job, stats={"inputs": len(paths), "skipped_resume": skipped, "scored_this_run": writer.rows,
                                        "seconds": seconds, "parts_this_run": len(writer.parts)}, shard=shard)
    c = summary["counts"]
    print(f"{job.out}: {c['rows']} row(s) ({c['scored']} scored, {c['errors']} error(s)) in {c['parts']} part(s); "
          f"this run: {writer.rows} image(s) in {seconds:.1f} s ({summary['speed']['images_per_s']:.1f} images/s)")
    problem = job.extra.get("model_problem", lambda: None)()
    if problem:  # the model failed at run time, or every score was NaN / infinite: a model error (exit 2)
        print(f"icrt: error: {problem}", file=sys.stderr)  # (the images have their error rows)
        return EXIT_USAGE
    return EXIT_FAILURES if c["errors"] else EXIT_OK
