"""``python -m tests.runtime.cli.stalled_score N ARGV...``: ``icrt ARGV`` whose model stalls after its N-th batch
(it waits for an hour before the next one), so that a test can interrupt a run half-way without timing luck: the
test waits until N rows are out, then signals the process, which is certain to be still running.

A test helper run as its own process (the patch lives here, never in icrt's code)."""
import sys
import time

from icrt.runtime.scoring.scorer import Scorer


def stall_after(n: int) -> None:
    """Every Scorer opened from now on runs ``n`` batches, then waits (Ctrl+C and SIGTERM end the wait)."""
    real_open = Scorer.open.__func__

    def open_stalling(cls, options):
        scorer = real_open(cls, options)
        run, done = scorer.backend.run, [0]

        def run_then_stall(batch):
            if done[0] >= n:
                time.sleep(3600)
            done[0] += 1
            return run(batch)
        scorer.backend.run = run_then_stall
        return scorer
    Scorer.open = classmethod(open_stalling)


if __name__ == "__main__":
    from icrt.runtime.cli import main

    stall_after(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
