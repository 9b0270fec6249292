"""Statistics for a comparison: from latency samples of a baseline and another scenario to a
verdict ("faster", "slower", "no difference detectable") with bootstrap confidence intervals.

Plain data in, plain data out: no I/O, no printing. Latencies are numbers in "ticks" (a guest
instruction under QEMU's -icount shift=0, a TSC cycle under host timing); the unit word is only
used in the sentence.

Each side of a comparison is a list of runs (repeats, made interleaved A B A B), each run a
sequence of samples. Why two levels: repeated runs of the same scenario differ from each other
by more than their samples suggest (boot-time placement, cache state), so treating all samples
of a side as one independent pool gives intervals that are too narrow. A side with >= 2 runs is
therefore resampled in two levels: runs with replacement, then samples with replacement within
each chosen run (its own size). A side with one run can only be resampled by samples. The choice
is made per side and reported in the result.

Point estimates are the statistic of all samples of a side pooled; percentiles are linear
interpolation between closest ranks (Hyndman-Fan type 7, numpy's default, the same as
`analysis.percentile`). Intervals are percentile-bootstrap intervals.

How it stays fast: each side's pooled samples are sorted once. A bootstrap resample is then a
vector of counts, one per sorted sample (how often it was drawn); the mean is a dot product, and
any order statistic is found by a search in the cumulative counts. Resamples are processed in
chunks of rows, all vectorized; no resample is ever sorted.
"""

import math
import re
from dataclasses import dataclass

import numpy as np

from .errors import TestbedError

OUTCOMES = ("faster", "slower", "no difference detectable")
STAT_NAMES_HELP = "mean, median, or pNN for the NN-th percentile (p90, p99; more digits are decimals: p999 = 99.9th)"
CELLS_PER_CHUNK = 1 << 22  # count cells (resamples x samples) held at once: 32 MB of int64


class VerdictError(TestbedError, ValueError):
    """Bad input to the comparison statistics; the message names the side, run and problem."""


# ---------------------------------------------------------------- statistic names

def quantile_of(name):
    """The quantile (0..1) a statistic name stands for, None for "mean"; VerdictError if unknown.

    Why only two-digit-or-longer pNN: "p1" or "p5" could mean 0.01 or 0.1; "p100" could mean
    the maximum or 0.100. Those are refused rather than guessed."""
    if name == "mean":
        return None
    if name == "median":
        return 0.5
    m = re.fullmatch(r"p(\d{2,})", name) if isinstance(name, str) else None
    if m is None or (len(m[1]) > 2 and m[1].endswith("0")) or int(m[1]) == 0:
        raise VerdictError(f"unknown statistic {name!r}: known are {STAT_NAMES_HELP}")
    return int(m[1]) / 10 ** len(m[1])


def _statistic(values, quantile):
    """One statistic (mean if quantile is None) of a 1-D array, type-7 percentiles."""
    return float(np.mean(values) if quantile is None else np.quantile(values, quantile))


# ---------------------------------------------------------------- input checks

def _checked_runs(runs, side, min_samples=2):
    """A side's runs as 1-D float arrays, checked: -> list of arrays. A bootstrap needs >= 2
    samples in all (one sample has no spread to resample)."""
    if isinstance(runs, (str, bytes)) or not hasattr(runs, "__iter__"):
        raise VerdictError(f"{side}: expected a list of runs, got {type(runs).__name__}")
    arrays = [_checked_run(run, side, index) for index, run in enumerate(runs)]
    if not arrays:
        raise VerdictError(f"{side}: no runs")
    total = sum(a.size for a in arrays)
    if total < min_samples:
        raise VerdictError(f"{side}: {total} sample in all runs; at least {min_samples} are needed")
    return arrays


def _checked_run(run, side, index):
    """One run as a 1-D float array: not empty, every value finite."""
    where = f"{side} run {index}"
    if isinstance(run, (str, bytes)):
        raise VerdictError(f"{where}: expected a sequence of numbers, got a string")
    try:
        values = np.asarray(run, dtype=np.float64)
    except (TypeError, ValueError):
        raise VerdictError(f"{where}: not a sequence of numbers") from None
    if values.ndim != 1:
        shape = "a single number" if values.ndim == 0 else f"a {values.ndim}-D array"
        raise VerdictError(f"{where}: expected a sequence of samples, got {shape} "
                           f"(pass a list of runs, each a list of samples)")
    if values.size == 0:
        raise VerdictError(f"{where}: empty run")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise VerdictError(f"{where}: non-finite value {values[bad[0]]} at sample {bad[0]} "
                           f"({bad.size} non-finite in this run)")
    return values


def _check_options(stats, n_boot, confidence):
    """The statistic names -> their quantiles (None for mean); n_boot and confidence in range."""
    if isinstance(stats, str):
        stats = (stats,)
    if not stats:
        raise VerdictError(f"no statistics asked for: known are {STAT_NAMES_HELP}")
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 1:
        raise VerdictError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise VerdictError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return {name: quantile_of(name) for name in stats}


# ---------------------------------------------------------------- one side, resampled

@dataclass(frozen=True)
class _Side:
    """A side prepared for resampling: its pooled samples sorted once, and for each run the
    positions of that run's samples in the sorted order."""

    sorted_values: np.ndarray
    run_ranks: list  # per run: an int array of positions in sorted_values
    two_level: bool  # resample runs, then samples within them

    @property
    def size(self):
        return self.sorted_values.size


def _prepare(runs):
    """Sort a side's pooled samples once, remembering where each run's samples went."""
    pooled = np.concatenate(runs)
    order = np.argsort(pooled, kind="stable")
    rank = np.empty(pooled.size, dtype=np.int64)
    rank[order] = np.arange(pooled.size)
    run_ranks = np.split(rank, np.cumsum([r.size for r in runs])[:-1])
    return _Side(pooled[order], run_ranks, two_level=len(runs) >= 2)


def _resample_counts(side, rows, rng):
    """`rows` bootstrap resamples of a side as counts: (rows, side.size) ints, entry [b, k] =
    how often sorted sample k was drawn in resample b."""
    n_runs = len(side.run_ranks)
    if side.two_level:
        times_picked = rng.multinomial(n_runs, np.full(n_runs, 1 / n_runs), size=rows)
    else:
        times_picked = np.ones((rows, n_runs), dtype=np.int64)
    cells = [_draw_within_run(ranks, times_picked[:, j], side.size, rng) for j, ranks in enumerate(side.run_ranks)]
    counts = np.bincount(cells[0] if len(cells) == 1 else np.concatenate(cells), minlength=rows * side.size)
    return counts.reshape(rows, side.size)


def _draw_within_run(ranks, times_picked, row_width, rng):
    """Each time a run was picked for a resample, draw as many samples from it as it has, with
    replacement. -> flat cell numbers (resample * row_width + sorted position), one per draw.
    A run that holds every sample of its side has ranks 0..n-1 in some order, so drawing a
    position directly is the same as drawing one of its samples."""
    pick_starts = np.repeat(np.arange(times_picked.size, dtype=np.int64) * row_width, times_picked)
    drawn = rng.integers(0, ranks.size, size=(pick_starts.size, ranks.size))
    positions = drawn if ranks.size == row_width else ranks[drawn]
    return (positions + pick_starts[:, None]).ravel()


def _stats_from_counts(counts, sorted_values, quantiles):
    """Each statistic of each resample given as counts -> array (len(quantiles), rows).
    The mean is a weighted sum; percentiles come from order statistics (_order_statistic).
    Consumes `counts` (turned into cumulative counts in place, to save memory and time)."""
    totals = counts.sum(axis=1)
    means = (counts @ sorted_values) / totals if None in quantiles else None
    order_statistic = _order_statistic(counts, totals, sorted_values)
    return np.stack([means if q is None else _percentile_rows(order_statistic, totals, q) for q in quantiles])


def _percentile_rows(order_statistic, totals, q):
    """Type-7 percentile q of each resample: h = (n-1)q, between the order statistics at ranks
    floor(h) and floor(h)+1 (n = that resample's size)."""
    h = (totals - 1) * q
    low = np.floor(h).astype(np.int64)
    value_low = order_statistic(low)
    return value_low + (h - low) * (order_statistic(np.minimum(low + 1, totals - 1)) - value_low)


def _order_statistic(counts, totals, sorted_values):
    """A function: one rank per resample (0-based) -> the sample at that rank in each resample.

    The sample at rank r is the first sorted position whose cumulative count exceeds r. One
    searchsorted answers every resample at once: each row's cumulative counts are shifted by
    row * (largest total + 1), which keeps the flattened array ascending."""
    rows, width = counts.shape
    shift = np.arange(rows, dtype=np.int64) * (int(totals.max()) + 1)
    np.cumsum(counts, axis=1, out=counts)
    counts += shift[:, None]
    flat_cumulative = counts.ravel()
    row_first = np.arange(rows, dtype=np.int64) * width
    return lambda ranks: sorted_values[np.searchsorted(flat_cumulative, shift + ranks, side="right") - row_first]


def _bootstrap_stats(side, quantiles, n_boot, rng):
    """The statistics of n_boot bootstrap resamples of a side -> array (len(quantiles), n_boot).
    Processed in chunks of rows so memory stays near CELLS_PER_CHUNK counts."""
    rows_per_chunk = max(1, CELLS_PER_CHUNK // side.size)
    chunks = []
    for start in range(0, n_boot, rows_per_chunk):
        counts = _resample_counts(side, min(rows_per_chunk, n_boot - start), rng)
        chunks.append(_stats_from_counts(counts, side.sorted_values, quantiles))
    return np.concatenate(chunks, axis=1)


# ---------------------------------------------------------------- comparison

def bootstrap_compare(baseline_runs, other_runs, stats=("median", "mean", "p99"), n_boot=2000, seed=0,
                      confidence=0.95):
    """Compare two sides, each a list of runs (each run a sequence of samples), statistic by
    statistic: point estimates of the pooled samples, difference other - baseline and ratio
    other / baseline, each difference and ratio with a percentile-bootstrap interval.

    -> {"confidence", "n_boot", "seed",
        "sides": {"baseline"|"other": {"runs", "samples", "resampling": "runs+samples"|"samples"}},
        "stats": {name: {"baseline", "other", "difference", "difference_ci": (low, high),
                         "ratio", "ratio_ci": (low, high)}}}
    ratio and ratio_ci are None when the baseline statistic is 0; ratio_ci alone is None when a
    resampled baseline statistic is 0. Deterministic for a given seed and input."""
    quantiles = _check_options(stats, n_boot, confidence)
    base_runs, other_runs = _checked_runs(baseline_runs, "baseline"), _checked_runs(other_runs, "other")
    base, other = _prepare(base_runs), _prepare(other_runs)
    rng = np.random.default_rng(seed)
    base_boot = _bootstrap_stats(base, list(quantiles.values()), n_boot, rng)
    other_boot = _bootstrap_stats(other, list(quantiles.values()), n_boot, rng)
    tails = ((1 - confidence) / 2, (1 + confidence) / 2)
    per_stat = {name: _stat_entry(_statistic(base.sorted_values, q), _statistic(other.sorted_values, q),
                                  base_boot[i], other_boot[i], tails)
                for i, (name, q) in enumerate(quantiles.items())}
    return {"confidence": confidence, "n_boot": int(n_boot), "seed": seed,
            "sides": {"baseline": _side_facts(base_runs), "other": _side_facts(other_runs)},
            "stats": per_stat}


def compare_to_baseline(baseline_runs, others, **options):
    """bootstrap_compare of each named other side against the one baseline:
    {name: runs} -> {name: result}. Each uses the same seed, so each result is what a single
    bootstrap_compare call gives. No correction for making several comparisons is applied."""
    return {name: bootstrap_compare(baseline_runs, runs, **options) for name, runs in others.items()}


def _stat_entry(base_point, other_point, base_boot, other_boot, tails):
    """Point estimates, difference and ratio with their intervals, for one statistic."""
    entry = {"baseline": base_point, "other": other_point, "difference": other_point - base_point,
             "difference_ci": _interval(other_boot - base_boot, tails), "ratio": None, "ratio_ci": None}
    if base_point != 0:
        entry["ratio"] = other_point / base_point
        if np.all(base_boot != 0):
            entry["ratio_ci"] = _interval(other_boot / base_boot, tails)
    return entry


def _interval(replicates, tails):
    """Percentile-bootstrap interval: the tails' quantiles of the bootstrap replicates."""
    low, high = np.quantile(replicates, tails)
    return float(low), float(high)


def _side_facts(runs):
    return {"runs": len(runs), "samples": int(sum(r.size for r in runs)),
            "resampling": "runs+samples" if len(runs) >= 2 else "samples"}


# ---------------------------------------------------------------- run-to-run spread

def run_spread(runs, stat="median"):
    """How much repeated runs of one scenario disagree: the statistic of each run, their min and
    max, and the relative spread (max - min) / median of the per-run values (None if that median
    is 0). -> {"stat", "values", "min", "max", "relative_spread"}."""
    quantile = quantile_of(stat)
    arrays = _checked_runs(runs, "scenario", min_samples=1)
    values = [_statistic(a, quantile) for a in arrays]
    middle = float(np.median(values))
    low, high = min(values), max(values)
    return {"stat": stat, "values": values, "min": low, "max": high,
            "relative_spread": (high - low) / middle if middle != 0 else None}


# ---------------------------------------------------------------- verdict

@dataclass(frozen=True)
class Verdict:
    """The outcome for the other side relative to the baseline, and one sentence saying it."""

    outcome: str  # one of OUTCOMES
    sentence: str
    stat: str
    baseline: float
    other: float
    difference: float
    difference_ci: tuple
    ratio: float | None
    ratio_ci: tuple | None
    confidence: float


def verdict(comparison_result, stat="median", lower_is_better=True, baseline_name="baseline",
            other_name="other", unit="ticks"):
    """Verdict on one statistic of a bootstrap_compare result. The outcome is decided only by
    whether the interval of the difference excludes 0: entirely below 0 is "faster" when lower
    is better, entirely above is "slower"; an interval touching or containing 0 is
    "no difference detectable", however large the point difference."""
    entry = _entry(comparison_result, stat)
    outcome = _outcome(entry["difference_ci"], lower_is_better)
    confidence = comparison_result["confidence"]
    sentence = _sentence(outcome, entry, stat, confidence, baseline_name, other_name, unit)
    ratio_ci = tuple(entry["ratio_ci"]) if entry["ratio_ci"] is not None else None
    return Verdict(outcome, sentence, stat, entry["baseline"], entry["other"], entry["difference"],
                   tuple(entry["difference_ci"]), entry["ratio"], ratio_ci, confidence)


def _entry(comparison_result, stat):
    stats = comparison_result.get("stats", {})
    if stat not in stats:
        raise VerdictError(f"statistic {stat!r} is not in the comparison result (it has {', '.join(stats) or 'none'})")
    return stats[stat]


def _outcome(difference_ci, lower_is_better):
    low, high = difference_ci
    if high < 0:
        return "faster" if lower_is_better else "slower"
    if low > 0:
        return "slower" if lower_is_better else "faster"
    return "no difference detectable"


def _sentence(outcome, entry, stat, confidence, baseline_name, other_name, unit):
    """E.g. "natsume is faster than stock: median 3,178 vs 3,716 ticks, −14.5 % (95 % CI −15.1 % to −13.9 %)"."""
    if outcome == "no difference detectable":
        head = f"no difference detectable between {other_name} and {baseline_name}"
    else:
        head = f"{other_name} is {outcome} than {baseline_name}"
    values = f"{stat} {_number(entry['other'])} vs {_number(entry['baseline'])} {unit}"
    return f"{head}: {values}, {_change(entry, confidence, unit)}"


def _change(entry, confidence, unit):
    """The change as a percentage with its interval, or in the unit when there is no ratio."""
    level = f"{confidence * 100:g} % CI"
    if entry["ratio_ci"] is not None:
        low, high = (r - 1 for r in entry["ratio_ci"])
        decimals = _decimals((high - low) * 100)
        pct = lambda x: _signed(x * 100, decimals) + " %"
        return f"{pct(entry['ratio'] - 1)} ({level} {pct(low)} to {pct(high)})"
    low, high = entry["difference_ci"]
    signed = lambda x: _number(x, signed=True)
    return f"{signed(entry['difference'])} {unit} ({level} {signed(low)} to {signed(high)} {unit})"


def _decimals(width):
    """Decimals for percentages whose interval is `width` points wide: 1, more for a very narrow one."""
    if width <= 0 or width >= 0.1:
        return 1
    return min(4, 1 - math.floor(math.log10(width)))


def _signed(x, decimals):
    """+1.5, −1.5 (a true minus sign), 0.0 when it rounds to zero."""
    text = f"{x:+.{decimals}f}"
    if float(text) == 0:
        return text[1:]
    return text.replace("-", "\u2212")


def _number(x, signed=False):
    """3,716 for large or whole values, 12.5 / 0.00123 (3 significant digits) otherwise."""
    sign = "+" if signed else ""
    spec = f"{sign},.0f" if abs(x) >= 100 or float(x).is_integer() else f"{sign},.3g"
    return format(x, spec).replace("-", "\u2212")
