"""Comparison statistics: synthetic samples with known answers (a known shift, identical
distributions, runs offset from each other), hand-made results for the verdict sentence, and
the error cases."""

import statistics

import numpy as np
import pytest

from orchestrator import analysis
from orchestrator import verdict as vd

MODES = (2000.0, 2600.0, 4000.0)  # a multi-modal latency shape with a right tail, in ticks
MODE_WEIGHTS = (0.5, 0.4, 0.1)


def latencies(rng, n, shift=0.0):
    """n samples of the multi-modal shape, moved by `shift` ticks: a pure shift moves every
    quantile and the mean by exactly `shift`, so the true differences are known."""
    mode = rng.choice(MODES, size=n, p=MODE_WEIGHTS)
    return mode + rng.exponential(150.0, n) + shift


def ci_contains(ci, value):
    low, high = ci
    return low <= value <= high


def width(ci):
    return ci[1] - ci[0]


# ---- statistic names and point estimates

@pytest.mark.parametrize("name, quantile", [("mean", None), ("median", 0.5), ("p50", 0.5), ("p90", 0.9),
                                            ("p99", 0.99), ("p999", 0.999), ("p05", 0.05)])
def test_statistic_names(name, quantile):
    assert vd.quantile_of(name) == quantile


def test_point_estimates_are_the_pooled_statistics_of_analysis():
    """Integer ticks with exact repeats, two runs: the point estimates are analysis's statistics
    of all samples pooled (type-7 percentiles)."""
    rng = np.random.default_rng(3)
    runs = [list(rng.choice([3178, 3178, 3200, 3716, 9000], size=n)) for n in (101, 250)]
    result = vd.bootstrap_compare(runs, [[1, 2, 3, 4]], stats=("median", "mean", "p90", "p99"), n_boot=10)
    pooled = sorted(runs[0] + runs[1])
    got = {name: entry["baseline"] for name, entry in result["stats"].items()}
    assert got["median"] == statistics.median(pooled)
    assert got["mean"] == pytest.approx(statistics.fmean(pooled), rel=1e-12)
    assert got["p90"] == pytest.approx(analysis.percentile(pooled, 0.90), rel=1e-12)
    assert got["p99"] == pytest.approx(analysis.percentile(pooled, 0.99), rel=1e-12)


def test_statistics_of_count_resamples_match_numpy_on_the_expanded_samples():
    """The counts trick (no resample is sorted) gives exactly what numpy gives on each resample
    written out, for resamples of different sizes, with zero counts and ties."""
    rng = np.random.default_rng(5)
    sorted_values = np.sort(rng.choice([1.0, 2.0, 2.0, 5.0, 7.5, 100.0], size=40))
    counts = rng.integers(0, 4, size=(300, 40))
    counts[:, 0] += 1  # every resample has at least one sample
    counts[7] = 0
    counts[7, 39] = 1  # a resample of one sample
    quantiles = [None, 0.5, 0.9, 0.99, 0.001]
    got = vd._stats_from_counts(counts.copy(), sorted_values, quantiles)
    for row, row_counts in enumerate(counts):
        expanded = np.repeat(sorted_values, row_counts)
        want = [expanded.mean()] + [np.quantile(expanded, q) for q in quantiles[1:]]
        np.testing.assert_allclose(got[:, row], want, rtol=1e-12)


# ---- known answers

def test_identical_distributions_give_no_difference_detectable():
    rng = np.random.default_rng(11)
    result = vd.bootstrap_compare([latencies(rng, 3000)], [latencies(rng, 3000)])
    for name, entry in result["stats"].items():
        assert ci_contains(entry["difference_ci"], 0), name
        assert ci_contains(entry["ratio_ci"], 1), name
    v = vd.verdict(result, baseline_name="stock", other_name="stock-again")
    assert v.outcome == "no difference detectable"
    assert v.sentence.startswith("no difference detectable between stock-again and stock: median ")


def test_a_ten_percent_shift_is_slower_and_the_interval_holds_the_true_shift():
    rng = np.random.default_rng(12)
    base = latencies(rng, 5000)
    shift = 0.10 * float(np.median(base))  # about +10 % at the median
    result = vd.bootstrap_compare([base], [latencies(rng, 5000, shift)])
    median = result["stats"]["median"]
    assert median["difference_ci"][0] > 0
    assert ci_contains(median["difference_ci"], shift)
    for name in ("mean", "p99"):  # a pure shift moves every statistic by the same amount
        assert ci_contains(result["stats"][name]["difference_ci"], shift), name
    v = vd.verdict(result, baseline_name="stock", other_name="natsume")
    assert v.outcome == "slower"
    assert v.sentence.startswith("natsume is slower than stock: median ")
    assert vd.verdict(result, lower_is_better=False).outcome == "faster"


def test_a_shift_down_is_faster():
    rng = np.random.default_rng(13)
    result = vd.bootstrap_compare([latencies(rng, 4000)], [latencies(rng, 4000, -200.0)], stats=("median",))
    assert result["stats"]["median"]["difference_ci"][1] < 0
    assert vd.verdict(result).outcome == "faster"


def test_integer_ticks_with_few_distinct_values():
    """Under -icount latencies repeat exactly; a shift of whole ticks is still found, and
    identical runs are not called different."""
    rng = np.random.default_rng(14)
    values, weights = [3178, 3180, 3716, 5000], [0.55, 0.2, 0.2, 0.05]
    base = rng.choice(values, size=4000, p=weights)
    same = rng.choice(values, size=4000, p=weights)
    assert vd.verdict(vd.bootstrap_compare([base], [same])).outcome == "no difference detectable"
    shifted = vd.bootstrap_compare([base], [rng.choice(values, size=4000, p=weights) + 40])
    assert shifted["stats"]["median"]["difference"] == 40
    assert vd.verdict(shifted).outcome == "slower"


def test_the_median_interval_covers_the_true_difference_about_95_percent_of_the_time():
    """200 simulated experiments with a known median difference of 100 ticks."""
    rng = np.random.default_rng(21)
    covered = 0
    for seed in range(200):
        result = vd.bootstrap_compare([latencies(rng, 300)], [latencies(rng, 300, 100.0)],
                                      stats=("median",), n_boot=1000, seed=seed)
        covered += ci_contains(result["stats"]["median"]["difference_ci"], 100.0)
    assert 0.90 <= covered / 200 <= 0.99


# ---- repeated runs

def offset_runs(rng, offsets, n, shift=0.0):
    return [latencies(rng, n, shift) + offset for offset in offsets]


def test_two_level_resampling_widens_the_interval_when_runs_differ():
    rng = np.random.default_rng(31)
    offsets = (-240.0, -80.0, 80.0, 240.0)  # each run sits a constant apart from the others
    base, other = offset_runs(rng, offsets, 1000), offset_runs(rng, offsets, 1000, 50.0)
    two_level = vd.bootstrap_compare(base, other, n_boot=1000)
    pooled = vd.bootstrap_compare([np.concatenate(base)], [np.concatenate(other)], n_boot=1000)
    assert two_level["sides"]["baseline"] == {"runs": 4, "samples": 4000, "resampling": "runs+samples"}
    assert pooled["sides"]["other"] == {"runs": 1, "samples": 4000, "resampling": "samples"}
    for name in ("median", "mean", "p99"):
        assert width(two_level["stats"][name]["difference_ci"]) > 2 * width(pooled["stats"][name]["difference_ci"]), name
    assert two_level["stats"]["median"]["difference"] == pooled["stats"]["median"]["difference"]


def test_a_two_level_resample_is_whole_runs_each_resampled_at_its_own_size():
    """Runs 3 and 5 samples long, values interleaved: every resample draws from run A only at
    A's samples, len(A) draws per time A was picked, likewise B, and 2 picks in all."""
    run_a, run_b = [1.0, 4.0, 7.0], [2.0, 3.0, 5.0, 6.0, 8.0]
    side = vd._prepare([np.array(run_a), np.array(run_b)])
    counts = vd._resample_counts(side, 400, np.random.default_rng(0))
    in_a = np.isin(side.sorted_values, run_a)
    picks_a, picks_b = counts[:, in_a].sum(axis=1) / 3, counts[:, ~in_a].sum(axis=1) / 5
    np.testing.assert_array_equal(picks_a + picks_b, 2)
    np.testing.assert_array_equal(picks_a, np.round(picks_a))
    assert set(picks_a) == {0, 1, 2}


def test_two_level_resampling_of_runs_that_agree_is_only_somewhat_wider():
    """Resampling at both levels counts the within-run noise twice when runs do not differ
    (a known, conservative bias): about 1.2-1.7x the pooled width with 4 runs, under 2x."""
    rng = np.random.default_rng(34)
    base, other = offset_runs(rng, (0.0,) * 4, 1000), offset_runs(rng, (0.0,) * 4, 1000)
    two_level = vd.bootstrap_compare(base, other, n_boot=1000)
    pooled = vd.bootstrap_compare([np.concatenate(base)], [np.concatenate(other)], n_boot=1000)
    for name in ("median", "mean", "p99"):
        ratio = width(two_level["stats"][name]["difference_ci"]) / width(pooled["stats"][name]["difference_ci"])
        assert 0.9 < ratio < 2.0, name


def test_with_random_run_offsets_two_level_covers_and_pooling_does_not():
    """Runs that differ at random (a normal offset per run): the true difference of 100 ticks
    is inside the two-level interval about 95 % of the time, inside the pooled one far less."""
    rng = np.random.default_rng(32)
    covered = {"two-level": 0, "pooled": 0}
    for seed in range(100):
        base = offset_runs(rng, rng.normal(0, 150, 5), 150)
        other = offset_runs(rng, rng.normal(0, 150, 5), 150, 100.0)
        for kind, (b, o) in {"two-level": (base, other),
                             "pooled": ([np.concatenate(base)], [np.concatenate(other)])}.items():
            result = vd.bootstrap_compare(b, o, stats=("median",), n_boot=500, seed=seed)
            covered[kind] += ci_contains(result["stats"]["median"]["difference_ci"], 100.0)
    assert covered["two-level"] >= 88
    assert covered["pooled"] <= 80


def test_sides_are_resampled_each_by_its_own_structure():
    rng = np.random.default_rng(33)
    result = vd.bootstrap_compare([latencies(rng, 500)], offset_runs(rng, (0.0, 10.0), 250), n_boot=50)
    assert result["sides"]["baseline"]["resampling"] == "samples"
    assert result["sides"]["other"]["resampling"] == "runs+samples"


def test_run_spread():
    spread = vd.run_spread([[1, 2, 3], [10, 20, 30, 40], [5, 5]])
    assert spread == {"stat": "median", "values": [2.0, 25.0, 5.0], "min": 2.0, "max": 25.0,
                      "relative_spread": pytest.approx(23 / 5)}
    assert vd.run_spread([[0, 0], [0, 2]], stat="mean")["relative_spread"] == pytest.approx(2.0)
    assert vd.run_spread([[0, 0], [0, 0], [1, 1]])["relative_spread"] is None  # median of the medians is 0
    assert vd.run_spread([[7]])["values"] == [7.0]  # no resampling here, so one sample is enough
    with pytest.raises(vd.VerdictError, match="scenario run 1: empty run"):
        vd.run_spread([[1], []])


# ---- determinism and several scenarios

def test_a_seed_reproduces_exactly_and_another_seed_differs():
    rng = np.random.default_rng(41)
    base, other = offset_runs(rng, (0.0, 30.0, 60.0), 700), offset_runs(rng, (0.0, 30.0, 60.0), 700, 20.0)
    first = vd.bootstrap_compare(base, other, n_boot=300, seed=7)
    assert vd.bootstrap_compare(base, other, n_boot=300, seed=7) == first
    again = vd.bootstrap_compare(base, other, n_boot=300, seed=8)
    assert again["stats"]["median"]["difference_ci"] != first["stats"]["median"]["difference_ci"]
    assert again["stats"]["median"]["difference"] == first["stats"]["median"]["difference"]


def test_compare_to_baseline_is_one_comparison_per_other_side():
    rng = np.random.default_rng(42)
    base, a, b = [latencies(rng, 300)], [latencies(rng, 300, 50.0)], [latencies(rng, 300, -50.0)]
    results = vd.compare_to_baseline(base, {"a": a, "b": b}, stats=("median",), n_boot=200, seed=3)
    assert list(results) == ["a", "b"]
    assert results["b"] == vd.bootstrap_compare(base, b, stats=("median",), n_boot=200, seed=3)


# ---- the verdict and its sentence

def hand_made(base, other, difference_ci, ratio_ci, stat="median", confidence=0.95):
    ratio = other / base if base else None
    return {"confidence": confidence, "stats": {stat: {
        "baseline": base, "other": other, "difference": other - base, "difference_ci": difference_ci,
        "ratio": ratio, "ratio_ci": ratio_ci}}}


def test_the_sentence():
    result = hand_made(3716, 3178, (-561.0, -517.0), (1 - 0.151, 1 - 0.139))
    v = vd.verdict(result, baseline_name="stock", other_name="natsume")
    assert v.sentence == "natsume is faster than stock: median 3,178 vs 3,716 ticks, −14.5 % (95 % CI −15.1 % to −13.9 %)"
    assert (v.outcome, v.stat, v.baseline, v.other, v.difference_ci) == ("faster", "median", 3716, 3178, (-561.0, -517.0))
    slower = vd.verdict(hand_made(1000, 1100, (80.0, 120.0), (1.08, 1.12), stat="p99", confidence=0.9),
                        stat="p99", baseline_name="A", other_name="B", unit="cycles")
    assert slower.sentence == "B is slower than A: p99 1,100 vs 1,000 cycles, +10.0 % (90 % CI +8.0 % to +12.0 %)"


@pytest.mark.parametrize("difference_ci, outcome", [
    ((-900.0, 5.0), "no difference detectable"),  # a large point difference, but 0 inside
    ((0.0, 40.0), "no difference detectable"),  # touching 0 does not exclude it
    ((-0.002, -0.001), "faster"),  # tiny, but 0 excluded
    ((0.001, 0.002), "slower")])
def test_the_outcome_depends_only_on_whether_the_interval_excludes_zero(difference_ci, outcome):
    result = hand_made(1000.0, 600.0, difference_ci, (0.5, 1.2))
    assert vd.verdict(result).outcome == outcome


def test_a_zero_baseline_has_no_ratio_and_the_sentence_uses_the_unit():
    result = vd.bootstrap_compare([[0, 0, 0, 0, 0, 0, 1]], [[5, 6, 7, 5, 6, 7, 6]], stats=("median",), n_boot=200)
    entry = result["stats"]["median"]
    assert (entry["baseline"], entry["ratio"], entry["ratio_ci"]) == (0.0, None, None)
    v = vd.verdict(result, unit="ticks")
    assert v.outcome == "slower"
    assert v.sentence.startswith("other is slower than baseline: median 6 vs 0 ticks, +6 ticks (95 % CI +")


def test_very_narrow_intervals_get_more_decimals():
    v = vd.verdict(hand_made(100000.0, 100030.0, (20.0, 40.0), (1.0002, 1.0004)))
    assert v.sentence.endswith("+0.030 % (95 % CI +0.020 % to +0.040 %)")


# ---- errors

@pytest.mark.parametrize("baseline, problem", [
    ([[1, 2], []], "baseline run 1: empty run"),
    ([[7]], "1 sample in all runs"),
    ([], "baseline: no runs"),
    ([[1.0, float("nan"), 3.0]], "non-finite value nan at sample 1"),
    ([[1.0, 2.0], [float("inf")]], "baseline run 1: non-finite value inf"),
    ([1, 2, 3], "pass a list of runs"),
    ([["a", "b"]], "not a sequence of numbers"),
    ("12", "expected a list of runs")])
def test_bad_samples_are_named(baseline, problem):
    with pytest.raises(vd.VerdictError, match=problem.replace("(", r"\(")) as caught:
        vd.bootstrap_compare(baseline, [[1, 2, 3]], n_boot=10)
    assert isinstance(caught.value, ValueError)


def test_bad_other_side_is_named():
    with pytest.raises(vd.VerdictError, match="other run 0: empty run"):
        vd.bootstrap_compare([[1, 2, 3]], [[]], n_boot=10)


@pytest.mark.parametrize("stat", ["max", "p5", "p1", "p100", "p00", "P99", "", 99])
def test_unknown_statistics_are_refused(stat):
    with pytest.raises(vd.VerdictError, match="unknown statistic"):
        vd.bootstrap_compare([[1, 2, 3]], [[1, 2, 3]], stats=("median", stat), n_boot=10)
    with pytest.raises(vd.VerdictError, match="unknown statistic"):
        vd.run_spread([[1, 2, 3]], stat=stat)


@pytest.mark.parametrize("options, problem", [
    ({"n_boot": 0}, "n_boot"), ({"n_boot": 2.5}, "n_boot"), ({"confidence": 95}, "confidence"),
    ({"confidence": 1.0}, "confidence"), ({"stats": ()}, "no statistics")])
def test_bad_options_are_named(options, problem):
    with pytest.raises(vd.VerdictError, match=problem):
        vd.bootstrap_compare([[1, 2, 3]], [[1, 2, 3]], **options)


def test_verdict_on_a_statistic_that_was_not_computed():
    result = vd.bootstrap_compare([[1, 2, 3]], [[1, 2, 3]], stats=("mean",), n_boot=10)
    with pytest.raises(vd.VerdictError, match="'median' is not in the comparison result .it has mean."):
        vd.verdict(result)
