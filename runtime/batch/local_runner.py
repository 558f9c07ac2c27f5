"""The ``local`` runner of ``icrt batch``: the runtime's ``Scorer`` (its own batching and decode-ahead thread) in this
process; records are written part by part as they come (at most one part's rows in memory)."""
from __future__ import annotations

import time

from icrt.runtime.batch.watchdog import StalledError, Watchdog
from icrt.runtime.bundle.records import records_table
from icrt.runtime.scoring.inputs import read_uri


def run(job, paths: list[str], problems: dict, writer) -> None:
    """The runtime's Scorer in this process; rows go to the writer as they come (one part in memory)."""
    from icrt.runtime.scoring.inputs import in_input_order, is_uri
    from icrt.runtime.scoring.preprocess import load_for_model
    from icrt.runtime.scoring.scorer import Scorer

    scorer = Scorer.open(job.scorer.replace(workers=max(1, job.workers)))
    job.extra["ran"] = scorer.backend.describe()  # the backend that runs (never "auto"), its engine's version
    job.extra["model_problem"] = scorer.model_problem  # failed runs, every score NaN / infinite: a model error (exit 2)
    if any(is_uri(p) for p in paths):
        def loader(image):  # URIs read through pyarrow, local files as the Scorer reads them
            if isinstance(image, str) and is_uri(image):
                return load_for_model(read_uri(image), scorer.prep)
            return load_for_model(image, scorer.prep)
        scorer.loader = loader
    chunk = max(1, min(job.part_rows, 256))
    buf, since = [], time.monotonic()
    with Watchdog(job.stall_timeout) as dog:
        try:
            for rec in in_input_order(scorer, paths, problems):
                dog.tick()
                buf.append(rec)
                if len(buf) >= chunk or time.monotonic() - since >= 5:
                    writer.add(records_table(buf))
                    buf, since = [], time.monotonic()
            writer.add(records_table(buf))
        except KeyboardInterrupt:
            if dog.fired:
                raise StalledError(dog.message()) from None
            raise
