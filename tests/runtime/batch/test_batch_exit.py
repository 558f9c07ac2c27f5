"""`icrt batch` leaves nothing for a finalizing interpreter (issue 26): the parts it reads back (the summary, just
before it exits; a resume, first) are read by arrow from the file icrt opened, on the calling thread, and closed
before the read returns. Before, arrow's dataset reader parsed them from Python bytes and released that reader
on one of its own threads; when that came after the interpreter had begun to shut down, the thread's request for
the GIL ended it inside a C++ destructor: SIGABRT (exit 134) or SIGSEGV, after complete output. The test makes
those late releases certain (other threads' GIL requests delayed 300 ms: 6 of 10 runs of the code before crashed
here); every run must end with its exit code. Needs Linux, a C compiler and pyarrow."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("pyarrow")

from icrt.runtime.bundle.records import parquet_name  # noqa: E402
from tests.runtime.batch.helpers import icrt, make_inputs, read_rows, slow_gil_env, write_list  # noqa: E402


@pytest.mark.slow
def test_batch_exits_with_its_code_when_other_threads_are_late(tmp_path, square_bundle):
    paths = make_inputs(tmp_path / "in", 12, odd=False)
    lst = write_list(tmp_path / "list.txt", paths)
    env = slow_gil_env(tmp_path)
    codes = []
    for i in range(8):
        out = tmp_path / f"out{i // 2}"
        resume = i % 2 == 1
        if resume:
            for part in sorted(out.glob("part-*.parquet"))[-3:]:
                part.unlink()
        code, _, err = icrt("batch", "--files-from", lst, "--out", out, "-m", square_bundle, "--part-rows", 1,
                            *(["--resume"] if resume else []), env=env, timeout=300)
        codes.append(code)
        assert code == 1, f"run {i}: exit {code} {codes}\n{err[-3000:]}"
        assert sorted(r["image"] for r in read_rows(out)) == sorted(parquet_name(p) for p in paths)
        assert json.loads((out / "_SUCCESS").read_text())["rows"] == len(paths)
