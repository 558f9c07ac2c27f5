"""What ``icrt report`` shows, gathered in one pass over the rows in bounded memory, whatever their number: a
histogram and global quantiles (exact up to :data:`EXACT_GLOBAL` scores, then from :data:`GLOBAL_BINS` fine bins,
linear inside a bin); per folder (the parent directory of each path) counts, errors, mean, min, max and median
(exact up to :data:`EXACT_FOLDER` scores, then from :data:`FOLDER_BINS` bins; the first :data:`MAX_FOLDERS`
folders one by one, later ones in one "other folders" row); the exact :data:`EXTREMES` simplest and most complex
images (two heaps) and a uniform random sample (reservoir, fixed seed) of :data:`SAMPLE_SIZE` scored rows to
space thumbnails by rank; the first :data:`MAX_ERRORS` errors and a count of each message (the first
:data:`MAX_ERROR_KINDS` kinds; later ones are "other").
"""
from __future__ import annotations

import heapq
import math
import os
import random
from array import array
from typing import NamedTuple

from icrt.runtime.report.readers import Row

EXTREMES = 8  # exact simplest / most complex rows (at most --thumbs)
HIST_BINS = 40
EXACT_GLOBAL = 200_000
GLOBAL_BINS = 8192
EXACT_FOLDER = 2_000
FOLDER_BINS = 2048
MAX_FOLDERS = 500
SAMPLE_SIZE = 20_000
SAMPLE_SEED = 0
MAX_ERRORS = 1_000
MAX_ERROR_KINDS = 200
SHOW_PATH = 300  # characters of a path shown
SHOW_ERROR = 500


def frac(x: float, lo: float, hi: float) -> float:
    """Where ``x`` lies in [lo, hi], as 0 .. 1; computed on halves, so that no difference overflows (scores of
    -1e308 and 1e308 are finite, their difference is not)."""
    if not hi > lo:
        return 0.0
    return (x / 2 - lo / 2) / (hi / 2 - lo / 2)


def lerp(lo: float, hi: float, f: float) -> float:
    """The value at ``f`` (0 .. 1) of the way from lo to hi, without overflow."""
    return lo * (1 - f) + hi * f


def width(lo: float, hi: float, n: int) -> float:
    """(hi - lo) / n without overflow (inf only when the result itself is beyond float)."""
    return hi / n - lo / n


class Dist:
    """Scores of one group: exact quantiles up to ``exact_limit`` scores, then from ``bins`` bins over [lo, hi]."""

    def __init__(self, lo: float, hi: float, exact_limit: int, bins: int):
        self.lo, self.hi, self.exact_limit, self.nbins = lo, hi, exact_limit, bins
        self.n, self.avg, self.min, self.max = 0, 0.0, math.inf, -math.inf
        self.values: array | None = array("d")
        self.bins: list[int] | None = None

    def _bin(self, x: float) -> int:
        return min(self.nbins - 1, max(0, int(frac(x, self.lo, self.hi) * self.nbins)))

    def add(self, x: float) -> None:
        self.n += 1
        self.avg += x / self.n - self.avg / self.n  # a running mean: a sum of huge scores would overflow
        self.min, self.max = min(self.min, x), max(self.max, x)
        if self.values is not None:
            self.values.append(x)
            if len(self.values) > self.exact_limit:
                self.bins = [0] * self.nbins
                for v in self.values:
                    self.bins[self._bin(v)] += 1
                self.values = None
        else:
            self.bins[self._bin(x)] += 1

    @property
    def exact(self) -> bool:
        return self.values is not None

    @property
    def mean(self) -> float | None:
        return self.avg if self.n else None

    def quantile(self, q: float) -> float | None:
        if not self.n:
            return None
        target = q * (self.n - 1)  # the position in the sorted scores (as numpy's default 'linear')
        if self.values is not None:
            s = sorted(self.values)
            i = int(math.floor(target))
            j = min(i + 1, self.n - 1)
            return lerp(s[i], s[j], target - i)
        seen = 0
        for i, c in enumerate(self.bins):
            if c and seen + c > target:
                v = lerp(self.lo, self.hi, (i + (target - seen + 0.5) / c) / self.nbins)
                return min(self.max, max(self.min, v))
            seen += c
        return self.max


class Folder:
    __slots__ = ("rows", "errors", "dist")

    def __init__(self, lo, hi):
        self.rows, self.errors = 0, 0
        self.dist = Dist(lo, hi, EXACT_FOLDER, FOLDER_BINS)


class Pick(NamedTuple):
    score: float
    image: str
    width: int | None
    height: int | None
    rank: float  # 0 .. 1 (share of scored images below), as far as known


class Report:
    """Everything the page shows, gathered in one pass over the rows (bounded memory)."""

    def __init__(self, lo: float, hi: float, thumbs: int):
        self.lo, self.hi, self.thumbs = lo, hi, thumbs
        self.extremes = min(EXTREMES, thumbs)
        self.rows = 0
        self.dist = Dist(lo, hi, EXACT_GLOBAL, GLOBAL_BINS)
        self.hist = [0] * HIST_BINS
        self.folders: dict[str, Folder] = {}
        self.other = Folder(lo, hi)  # rows of the folders met after the first MAX_FOLDERS
        self.errors: list[tuple[str, str]] = []
        self.error_count = 0
        self.error_kinds: dict[str, int] = {}
        self.low: list = []  # max-heap (negated) of the simplest
        self.high: list = []  # min-heap of the most complex
        self.sample: list = []
        self.scored = 0
        self._rng = random.Random(SAMPLE_SEED)

    def hist_bin(self, x: float) -> int:
        return min(HIST_BINS - 1, max(0, int(frac(x, self.lo, self.hi) * HIST_BINS)))

    def add(self, r: Row) -> None:
        self.rows += 1
        key = os.path.dirname(r.image) or "."
        folder = self.folders.get(key)
        if folder is None:
            if len(self.folders) < MAX_FOLDERS:
                folder = self.folders[key] = Folder(self.lo, self.hi)
            else:
                folder = self.other
        folder.rows += 1
        if r.score is None:
            folder.errors += 1
            self.error_count += 1
            msg = r.error[:SHOW_ERROR]
            if msg in self.error_kinds or len(self.error_kinds) < MAX_ERROR_KINDS:
                self.error_kinds[msg] = self.error_kinds.get(msg, 0) + 1
            else:
                self.error_kinds[""] = self.error_kinds.get("", 0) + 1  # "" = other messages
            if len(self.errors) < MAX_ERRORS:
                self.errors.append((r.image[:SHOW_PATH * 2], r.error[:SHOW_ERROR * 2]))
            return
        s = r.score
        folder.dist.add(s)
        self.dist.add(s)
        self.hist[self.hist_bin(s)] += 1
        item = (s, self.scored, r.image, r.width, r.height)  # ties: input order
        self.scored += 1
        if self.extremes:
            neg = (-s, -item[1], *item[2:])
            if len(self.low) < self.extremes:
                heapq.heappush(self.low, neg)
            elif neg > self.low[0]:
                heapq.heapreplace(self.low, neg)
            if len(self.high) < self.extremes:
                heapq.heappush(self.high, item)
            elif item > self.high[0]:
                heapq.heapreplace(self.high, item)
        if self.thumbs:
            if len(self.sample) < SAMPLE_SIZE:
                self.sample.append(item)
            else:
                j = self._rng.randrange(self.scored)
                if j < SAMPLE_SIZE:
                    self.sample[j] = item

    # what the page shows

    def simplest(self) -> list[Pick]:
        items = sorted((-s, -i, *rest) for s, i, *rest in self.low)
        return [self._pick(it) for it in items]

    def most_complex(self) -> list[Pick]:
        return [self._pick(it) for it in sorted(self.high)]

    def _pick(self, it, rank=None) -> Pick:
        s, _, path, w, h = it
        if rank is None:
            rank = self._rank(s)
        return Pick(s, path, w, h, rank)

    def _rank(self, s: float) -> float:
        """Share of the scored images below ``s`` (from the sample: exact when it holds them all)."""
        if not self.sample:
            return 0.0
        below = sum(1 for it in self.sample if it[0] < s)
        return below / max(1, len(self.sample) - 1)

    @property
    def sample_exact(self) -> bool:
        return self.scored <= SAMPLE_SIZE

    def spread(self) -> list[Pick]:
        """``thumbs`` images evenly spaced by rank, from the exact minimum to the exact maximum."""
        if not self.sample or not self.thumbs:
            return []
        s = sorted(self.sample)
        m = len(s)
        n = min(self.thumbs, m)
        if n == 1:
            idx = [0]
        else:
            idx = sorted({round(k * (m - 1) / (n - 1)) for k in range(n)})
        picks = [self._pick(s[i], i / (m - 1) if m > 1 else 0.0) for i in idx]
        if self.low:
            first = max(self.low)  # the simplest of all: the largest negated entry
            picks[0] = self._pick((-first[0], -first[1], *first[2:]), 0.0)
        if self.high:
            picks[-1] = self._pick(max(self.high), 1.0)
        return picks

    def folder_rows(self):
        items = sorted(self.folders.items())
        if self.other.rows:
            items.append((None, self.other))
        return items
