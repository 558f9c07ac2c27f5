"""Export as timed stages: each step runs through :func:`Stages.run`, which logs its start, its time and
its outcome the same way and keeps a record for export-report.json (after ultralytics' ``try_export``)."""
from __future__ import annotations

import logging
import time

log = logging.getLogger("export")


class Stages:
    def __init__(self):
        self.records: list[dict] = []

    def run(self, name: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` as stage ``name``; an exception is logged with the stage and re-raised."""
        t0 = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            seconds = round(time.perf_counter() - t0, 2)
            self.records.append({"stage": name, "ok": False, "seconds": seconds, "error": str(e) or type(e).__name__})
            log.info(f"export {name}: failed after {seconds:.1f} s")
            raise
        seconds = round(time.perf_counter() - t0, 2)
        self.records.append({"stage": name, "ok": True, "seconds": seconds})
        log.info(f"export {name}: done in {seconds:.1f} s")
        return result
