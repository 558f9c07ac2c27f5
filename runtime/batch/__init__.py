"""``icrt batch``: a large collection scored into Parquet parts, resumably, on one machine or a Ray cluster
(docs/batch.md). :func:`run_batch` runs a :class:`Job`; ``runtime.cli.commands.batch`` is the command line."""
from icrt.runtime.batch.job import Job, run_batch

__all__ = ["Job", "run_batch"]
