"""The report's statistics against SciPy and statsmodels, and the verdicts they lead to."""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired
from test_studies import final_runs as runs_from  # final runs with given test metrics, by seed

from reuse_nets import statistics
from reuse_nets.design import study_files
from reuse_nets.names import Verdict
from reuse_nets.report import analysis

SAMPLES = [
    [0.012, 0.021, -0.004, 0.017, 0.009],
    [-0.03, -0.01, -0.02, -0.025, -0.04, -0.015],
    [0.1, -0.1, 0.05, 0.02],
    [0.3, 0.31, 0.29],
]


@pytest.mark.parametrize("diffs", SAMPLES)
def test_t_test_and_interval_equal_scipy(diffs):
    assert statistics.t_test(diffs) == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue, rel=1e-9)
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert statistics.t_interval(diffs, 0.95) == pytest.approx((low, high), rel=1e-9)


@pytest.mark.parametrize("diffs", SAMPLES)
def test_sign_flip_is_scipys_exact_permutation_test(diffs):
    reference = stats.permutation_test(
        (np.asarray(diffs),), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    ).pvalue
    assert statistics.sign_flip_p(diffs) == pytest.approx(reference, rel=1e-9)


def test_sign_flip_cannot_go_below_two_over_two_to_the_n():
    # "5/5 seeds" is p = 0.0625 at best: not significant at 0.05, whatever the sizes.
    assert statistics.sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)
    assert statistics.sign_flip_p([0.1] * 6) == pytest.approx(2 / 64)
    many = list(np.random.default_rng(0).normal(0.5, 0.1, size=20))  # sampled beyond 16 seeds
    assert statistics.sign_flip_p(many) < 1e-3


def test_bootstrap_interval_agrees_with_scipy():
    diffs = np.random.default_rng(1).normal(0.02, 0.01, size=12)
    ours = statistics.bootstrap_interval(diffs, 0.95)
    theirs = stats.bootstrap((diffs,), np.mean, method="percentile", n_resamples=20_000, random_state=0)
    ci = theirs.confidence_interval
    assert ours == pytest.approx((ci.low, ci.high), abs=0.1 * np.std(diffs) / math.sqrt(12))
    assert statistics.bootstrap_interval(diffs, 0.95) == ours  # seeded


def test_holm_and_bonferroni_equal_statsmodels():
    # The residual_depth p-values (7 depths), and a family with ties and a nan.
    for pvalues in ([0.008, 0.011, 0.35, 0.36, 0.30, 0.06, 0.002], [0.01, 0.04, 0.03, 0.005, 0.04]):
        assert statistics.holm(pvalues) == pytest.approx(list(multipletests(pvalues, method="holm")[1]))
        assert statistics.bonferroni(pvalues) == pytest.approx(list(multipletests(pvalues, method="bonferroni")[1]))
    adjusted = statistics.holm([0.01, math.nan, 0.02])
    assert math.isnan(adjusted[1]) and adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)
    # The numbers: depth 1, 2 and 64 after Holm over 7 comparisons.
    holm = statistics.holm([0.008, 0.011, 0.35, 0.36, 0.30, 0.06, 0.002])
    assert [round(holm[i], 3) for i in (0, 1, 6)] == [0.048, 0.055, 0.014]


@pytest.mark.parametrize("diffs", SAMPLES)
@pytest.mark.parametrize("epsilon", [0.01, 0.05])
def test_tost_equals_statsmodels(diffs, epsilon):
    zeros = np.zeros(len(diffs))
    reference = ttost_paired(np.asarray(diffs), zeros, -epsilon, epsilon)[0]
    assert statistics.tost_p(diffs, epsilon) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("n, alpha", [(3, 0.05), (5, 0.05), (5, 0.05 / 12), (5, 0.05 / 6), (10, 0.01)])
def test_detectable_difference_equals_statsmodels_power(n, alpha):
    sd = 0.01
    effect = TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8, alternative="two-sided")
    assert statistics.detectable_difference(n, sd, alpha) == pytest.approx(effect * sd, rel=1e-4)


# --- Verdicts over a family -------------------------------------------------------------


def spec_with(*overrides: str):
    return study_files.load_study("residual_depth", list(overrides))


def simulated_family(spec, rng, effect: float, sd: float) -> list[analysis.Assessed]:
    """Final runs where every non-baseline cell is `effect` above the baseline, with seed noise."""
    tests = {}
    for cell in spec.cells():
        shift = effect if cell.values[spec.contrast] != spec.baseline else 0.0
        tests[cell.key] = list(0.8 + shift + rng.normal(0, sd, size=len(spec.final.seeds)))
    return analysis.assess(spec, analysis.paired_differences(spec, runs_from(spec, tests)))


def test_a_a_comparisons_are_rarely_called_better_or_worse():
    """No true difference: the family-wise rate of any better/worse verdict stays near alpha."""
    spec = spec_with("final.seeds=[1, 2, 3, 4, 5]")  # 7 depths: 7 comparisons per family
    rng = np.random.default_rng(0)
    families = 400
    any_claim = sum(
        any(a.verdict in (Verdict.BETTER, Verdict.WORSE) for a in simulated_family(spec, rng, 0.0, 0.01))
        for _ in range(families)
    )
    # Holm keeps the family-wise error at or below 0.05; 3 standard errors of slack.
    assert any_claim / families <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / families)
    # Without adjustment the same draws would claim far more often: the test can fail.
    rng = np.random.default_rng(0)
    unadjusted = sum(any(a.p_t < 0.05 for a in simulated_family(spec, rng, 0.0, 0.01)) for _ in range(families))
    assert unadjusted / families > 0.2


def test_a_planted_difference_is_found_and_equivalence_needs_min_effect():
    spec = spec_with("final.seeds=[1, 2, 3, 4, 5, 6, 7, 8]", "compare.depth=[1, 2]", "report.min_effect=0.01")
    rng = np.random.default_rng(3)
    found = [a.verdict for _ in range(50) for a in simulated_family(spec, rng, 0.03, 0.005)]
    assert found.count(Verdict.BETTER) >= 0.95 * len(found)
    same = [a.verdict for _ in range(50) for a in simulated_family(spec, rng, 0.0, 0.003)]
    assert same.count(Verdict.EQUIVALENT) >= 0.8 * len(same)
    # Family-wise error 0.05 per family of 2: a few false claims among 100 are expected.
    assert same.count(Verdict.BETTER) + same.count(Verdict.WORSE) <= 0.1 * len(same)
    without = spec_with("final.seeds=[1, 2, 3, 4, 5, 6, 7, 8]", "compare.depth=[1, 2]")
    assert all(a.verdict != Verdict.EQUIVALENT for a in simulated_family(without, rng, 0.0, 0.003))


def test_the_sign_flip_verdict_cannot_claim_with_five_seeds():
    spec = spec_with("final.seeds=[1, 2, 3, 4, 5]", "compare.depth=[64]", "report.test=sign_flip")
    tests = {"strategy=plain,depth=64": [0.5, 0.6, 0.55, 0.52, 0.58], "strategy=residual,depth=64": [0.85] * 5}
    (assessed,) = analysis.assess(spec, analysis.paired_differences(spec, runs_from(spec, tests)))
    assert assessed.p_sign_flip == pytest.approx(0.0625) and assessed.verdict == Verdict.INCONCLUSIVE
    assert "cannot go below p = 0.0625" in analysis.family_text(spec, [assessed])


def test_all_pairs_are_one_family():
    spec = study_files.load_study("strategy_depth", ["report.pairs=all", "compare.depth=[4]"])
    differences = analysis.paired_differences(spec, [])
    assert [(d.value, d.reference) for d in differences] == [
        ("concat", "plain"),
        ("residual", "plain"),
        ("masked", "plain"),
        ("residual", "concat"),
        ("masked", "concat"),
        ("masked", "residual"),
    ]
    # The declared family, even before any run finished: missing comparisons count as p = 1.
    text = analysis.family_text(spec, analysis.assess(spec, differences))
    assert "6 comparisons" in text and "6 of them without two paired seeds" in text


def test_a_detectable_but_negligible_difference_is_equivalent():
    spec = spec_with("final.seeds=[1, 2, 3, 4, 5, 6, 7, 8]", "compare.depth=[64]", "report.min_effect=0.01")
    base = [0.80, 0.81, 0.79, 0.80, 0.82, 0.80, 0.81, 0.79]
    tests = {"strategy=plain,depth=64": base, "strategy=residual,depth=64": [b + 0.003 for b in base]}
    (assessed,) = analysis.assess(spec, analysis.paired_differences(spec, runs_from(spec, tests)))
    assert assessed.p_adjusted < 0.05 and assessed.verdict == Verdict.EQUIVALENT
    assert "detectable, but smaller than the smallest worth caring about" in analysis.verdict(
        spec, assessed, "test_accuracy"
    )


def test_the_sign_flip_warning_counts_the_family():
    # 6 seeds alone could reach p = 0.03125 < 0.05, but not after adjusting for 7 comparisons.
    spec = spec_with("final.seeds=[1, 2, 3, 4, 5, 6]", "report.test=sign_flip")
    tests = {
        c.key: [0.8 + (0.05 if c.values["strategy"] == "residual" else 0) + i * 1e-3 for i in range(6)]
        for c in spec.cells()
    }
    assessed = analysis.assess(spec, analysis.paired_differences(spec, runs_from(spec, tests)))
    assert all(a.p_sign_flip == pytest.approx(2 / 64) and a.verdict == Verdict.INCONCLUSIVE for a in assessed)
    assert "0.2188 after adjusting for 7 comparisons" in analysis.family_text(spec, assessed)


def test_dry_run_states_the_family_and_the_detectable_difference():
    from reuse_nets.design import plan

    spec = study_files.load_study("strategy_depth", ["report.assumed_sd=0.005", "report.min_effect=0.01"])
    assert spec.family_size == 12  # 4 depths x 3 strategies against plain
    lines = plan.power_lines(spec)
    assert lines[0].startswith("verdicts: 12 comparisons, holm-adjusted at alpha 0.05")
    expected = statistics.detectable_difference(5, 0.005, 0.05 / 12)
    assert f"a difference of {expected:.4f} at alpha/12" in lines[1]
    assert lines[2].startswith("warning: that is larger than report.min_effect (0.01)")
    relaxed = study_files.load_study("strategy_depth", ["report.assumed_sd=0.001", "report.min_effect=0.01"])
    assert not [line for line in plan.power_lines(relaxed) if line.startswith("warning")]
    unknown = plan.power_lines(study_files.load_study("strategy_depth", ["report.assumed_sd=null"]))
    assert unknown[1].startswith("power: unknown; set report.assumed_sd")
    pairs = study_files.load_study("strategy_depth", ["report.pairs=all"])
    assert pairs.family_size == 4 * 6
    # A measured pilot SD replaces the assumed one; a pilot that gives none says why and falls back.
    measured = plan.power_lines(spec, plan.Spread(0.002, None, "pilot p"))
    assert f"{statistics.detectable_difference(5, 0.002, 0.05 / 12):.4f} at alpha/12" in measured[1]
    assert "SD of 0.002 (pilot p)" in measured[1]
    # A pilot that repeated its tuning: with repeats here, a unit's SD adds the tuning's.
    tuned = study_files.load_study("strategy_depth", ["tune.repeats=3"])
    line = plan.power_lines(tuned, plan.Spread(0.004, 0.003, "pilot q"))[1]
    assert f"with 3 tuning repeats and a paired-difference SD of {math.sqrt(0.003**2 + 0.004**2 / 5):.4g}" in line
    assert "lower bound" not in line
    assert (
        "between tuning runs the pilot's SD was 0.003"
        in plan.power_lines(spec, plan.Spread(0.004, 0.003, "pilot q"))[1]
    )
    missing = plan.power_lines(spec, "no MLflow tracking store at sqlite:///x.db")
    assert missing[1] == "power: the pilot gives no SD (no MLflow tracking store at sqlite:///x.db)"
    assert "(report.assumed_sd)" in missing[2]
    # With tuning repeats the units are repeat means: n = repeats, SD / sqrt(seeds) (a lower bound).
    repeated = study_files.load_study("strategy_depth", ["report.assumed_sd=0.005", "tune.repeats=3"])
    line = plan.power_lines(repeated)[1]
    assert f"with 3 tuning repeats and a paired-difference SD of {0.005 / math.sqrt(5):.4g}" in line
    assert "lower bound" in line


def test_dry_run_with_an_unrun_pilot_writes_nothing(tmp_path, monkeypatch):
    from reuse_nets.commands import run as run_command
    from reuse_nets.report import pilot

    monkeypatch.chdir(tmp_path)
    assert run_command.main(["--study", "strategy_depth", "--dry-run", "--set", "report.pilot=smoke"]) == 0
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no optuna.db
    found = pilot.power_spread("smoke", None)
    assert (
        isinstance(found, str) and found.startswith("no MLflow tracking store at sqlite:///") and "mlflow.db" in found
    )


# --- Tuning variance (tune.repeats) -------------------------------------------------------


@pytest.mark.parametrize("sizes", [(3, 3, 3), (5, 2, 4, 3)])
def test_variance_components_use_statsmodels_anova_mean_squares(sizes):
    """Between = (MS_between - MS_within) / n0 and within = MS_within, from statsmodels' one-way ANOVA."""
    import pandas as pd
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    rng = np.random.default_rng(len(sizes))
    groups = [list(rng.normal(rng.normal(0, 0.05), 0.02, size=n)) for n in sizes]
    frame = pd.DataFrame([(g, x) for g, values in enumerate(groups) for x in values], columns=["g", "y"])
    table = anova_lm(ols("y ~ C(g)", data=frame).fit())
    ms_between, ms_within = table["mean_sq"].iloc[0], table["mean_sq"].iloc[1]
    total = sum(sizes)
    n0 = (total - sum(n * n for n in sizes) / total) / (len(sizes) - 1)
    between, within = statistics.variance_components(groups)
    assert within == pytest.approx(ms_within)
    assert between == pytest.approx(max(0.0, (ms_between - ms_within) / n0))


def test_variance_components_recover_planted_variances():
    rng = np.random.default_rng(7)
    groups = [list(rng.normal(rng.normal(0, 0.03), 0.01, size=4)) for _ in range(3000)]
    between, within = statistics.variance_components(groups)
    assert math.sqrt(between) == pytest.approx(0.03, rel=0.05)
    assert math.sqrt(within) == pytest.approx(0.01, rel=0.05)
    assert all(math.isnan(v) for v in statistics.variance_components([[1.0, 2.0]]))


def repeated_runs(spec, tests: dict[tuple[str, int], list[float]]) -> list[analysis.FinalRun]:
    cells = {c.key: c for c in spec.cells()}
    return [
        analysis.FinalRun(f"{key}-{r}-{s}", key, cells[key].values, s, v, v, 1.0, 1.0, repeat=r)
        for (key, r), values in tests.items()
        for s, v in zip(spec.final_seeds(r), values)
    ]


def test_repeats_are_the_units_of_the_tests():
    """With tuning repeated, a comparison's units are the repeats' mean paired differences."""
    spec = spec_with("compare.depth=[64]", "final.seeds=[1, 2]", "tune.repeats=3")
    plain, residual = "strategy=plain,depth=64", "strategy=residual,depth=64"
    tests = {(plain, r): [0.80 + 0.01 * r, 0.82] for r in range(3)}
    tests |= {(residual, r): [0.90, 0.85 + 0.05 * r] for r in range(3)}
    (d,) = analysis.paired_differences(spec, repeated_runs(spec, tests))
    per_repeat = [[0.90 - (0.80 + 0.01 * r), 0.85 + 0.05 * r - 0.82] for r in range(3)]
    assert [list(g) for g in d.by_repeat] == [pytest.approx(g) for g in per_repeat]
    assert d.diffs == pytest.approx([sum(g) / 2 for g in per_repeat]) and d.unit == "tuning repeat"
    assert d.interval.n == 3
    (a,) = analysis.assess(spec, [d])
    assert a.p_t == pytest.approx(stats.ttest_1samp(d.diffs, 0).pvalue)
    cells = analysis.by_cell(repeated_runs(spec, tests), repeated=True)
    assert cells[plain].n == 3 and cells[plain].mean == pytest.approx(
        np.mean([np.mean(tests[(plain, r)]) for r in range(3)])
    )
    # With one repeat paired so far, the unit is still that repeat's mean: n = 1, never its seeds.
    (partial,) = analysis.paired_differences(
        spec, [r for r in repeated_runs(spec, tests) if r.repeat == 0 or r.cell == plain]
    )
    assert partial.interval.n == 1 and partial.unit == "tuning repeat"
    split = analysis.variance_split(d.by_repeat)
    assert split.repeats == 3 and split.single.n == 2 and split.pooled.n == 6 and split.clustered.n == 3
    assert (split.between_tuning, split.between_seed) == pytest.approx(statistics.variance_components(per_repeat))


def test_tuning_variance_widens_the_interval_and_keeps_a_a_honest():
    """A/A with a large between-tuning variance: a seeds-only test over-claims, the repeat-level one does not."""
    spec = spec_with("compare.depth=[1, 2, 4]", "final.seeds=[1, 2, 3, 4, 5]", "tune.repeats=4")
    rng = np.random.default_rng(11)
    families, naive, clustered = 200, 0, 0
    for _ in range(families):
        tests = {}
        for cell in spec.cells():
            for r in range(4):  # each tuning run lands on its own config: a shift shared by its seeds
                tests[(cell.key, r)] = list(0.8 + rng.normal(0, 0.02) + rng.normal(0, 0.005, size=5))
        differences = analysis.paired_differences(spec, repeated_runs(spec, tests))
        assessed = analysis.assess(spec, differences)
        clustered += any(a.verdict in (Verdict.BETTER, Verdict.WORSE) for a in assessed)
        # What one tuning run's seeds alone would say, unadjusted.
        naive += any(statistics.t_test(d.by_repeat[0]) < 0.05 for d in differences)
    assert clustered / families <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / families)
    assert naive / families > 0.5


# --- Intervals that agree with the verdicts -------------------------------------------------


@pytest.mark.parametrize("diffs", SAMPLES)
def test_one_sided_tests_and_the_bounds_that_invert_them(diffs):
    greater = stats.ttest_1samp(diffs, 0.0, alternative="greater").pvalue
    assert statistics.t_greater(diffs) == pytest.approx(greater, rel=1e-9)
    low, _ = stats.t.interval(0.9, len(diffs) - 1, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert statistics.t_lower_bound(diffs, 0.05) == pytest.approx(low, rel=1e-9)
    reference = stats.permutation_test(
        (np.asarray(diffs),), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="greater"
    ).pvalue
    assert statistics.sign_flip_greater(diffs) == pytest.approx(reference, rel=1e-9)
    # The sign-flip bound at a level is where the test of "mean <= bound" starts to keep its hypothesis.
    for level in (0.2, 0.4):
        bound = statistics.sign_flip_lower_bound(diffs, level)
        shift = 1e-9 * max(1.0, abs(bound))
        assert statistics.sign_flip_greater(np.asarray(diffs) - bound - shift) >= level
        assert statistics.sign_flip_greater(np.asarray(diffs) - bound + shift) < level
    assert statistics.sign_flip_lower_bound(diffs, 0.5 / 2 ** len(diffs)) == -math.inf  # beyond what n seeds can show


def with_p(p: float, n: int = 8, sd: float = 0.01) -> list[float]:
    """Paired differences whose two-sided t-test p-value is `p` (positive mean)."""
    z = np.linspace(-1.0, 1.0, n)
    z = (z - z.mean()) / z.std(ddof=1)
    mean = stats.t.isf(p / 2, n - 1) * sd / math.sqrt(n)
    return list(mean + sd * z)


def assessed_family(spec, diffs_by_depth: dict[int, list[float]]) -> list[analysis.Assessed]:
    tests = {}
    for depth, diffs in diffs_by_depth.items():
        tests[f"strategy=plain,depth={depth}"] = [0.8] * len(diffs)
        tests[f"strategy=residual,depth={depth}"] = [0.8 + x for x in diffs]
    return analysis.assess(spec, analysis.paired_differences(spec, runs_from(spec, tests)))


def test_a_holm_claim_that_bonferroni_would_not_make_is_bounded_at_0():
    """p = 0.001, 0.02, 0.5: Holm claims the second (2 x 0.02 < 0.05); Bonferroni (3 x 0.02) does not."""
    seeds = "final.seeds=[1, 2, 3, 4, 5, 6, 7, 8]"
    family = {1: with_p(0.001), 2: with_p(0.02), 4: with_p(0.5)}
    first, second, third = assessed_family(spec_with(seeds, "compare.depth=[1, 2, 4]"), family)
    assert second.p_t == pytest.approx(0.02) and second.p_adjusted == pytest.approx(0.04)
    assert second.verdict == Verdict.BETTER
    # The old Bonferroni interval, printed beside this verdict, contained 0.
    old_low, _ = statistics.t_interval(family[2], 1 - 0.05 / 3)
    assert old_low < 0
    low, high = second.verdict_interval
    assert low == 0.0 and high > np.mean(family[2])  # bounded at 0 on the claimed side (Strassburger and Bretz)
    assert first.verdict_interval[0] == 0.0 and third.verdict == Verdict.INCONCLUSIVE
    # The one left: its lower bound at alpha/2 over the one hypothesis Holm kept, its upper at alpha/2 over all 3.
    diffs = family[4]
    assert third.verdict_interval == pytest.approx(
        (statistics.t_lower_bound(diffs, 0.025), -statistics.t_lower_bound([-x for x in diffs], 0.025 / 3))
    )
    line = analysis.verdict_line(spec_with(seeds, "compare.depth=[1, 2, 4]"), second, "test_accuracy")
    assert "better, " in line and "(simultaneous 95% CI +0.0000 to +0." in line
    # Bonferroni makes no such claim, and its interval is the Bonferroni one, containing 0.
    bonferroni = assessed_family(spec_with(seeds, "compare.depth=[1, 2, 4]", "report.adjust=bonferroni"), family)
    assert bonferroni[1].verdict == Verdict.INCONCLUSIVE
    assert bonferroni[1].verdict_interval == pytest.approx(statistics.t_interval(family[2], 1 - 0.05 / 3))


def test_with_nothing_claimed_the_interval_is_the_bonferroni_one():
    spec = spec_with("final.seeds=[1, 2, 3, 4, 5, 6]", "compare.depth=[1, 2, 4, 8]")
    family = {1: with_p(0.03, 6), 2: with_p(0.2, 6), 4: [-x for x in with_p(0.04, 6)], 8: with_p(0.9, 6)}
    for a, diffs in zip(assessed_family(spec, family), family.values()):
        assert a.verdict == Verdict.INCONCLUSIVE and a.interval_label == "simultaneous 95% CI"
        assert a.verdict_interval == pytest.approx(statistics.t_interval(diffs, 1 - 0.05 / 4), rel=1e-9)
    # Bonferroni's interval is the Bonferroni one whatever is claimed.
    family[1] = with_p(1e-4, 6)
    bonferroni = assessed_family(
        spec_with("final.seeds=[1, 2, 3, 4, 5, 6]", "compare.depth=[1, 2, 4, 8]", "report.adjust=bonferroni"), family
    )
    assert bonferroni[0].verdict == Verdict.BETTER
    for a, diffs in zip(bonferroni, family.values()):
        assert a.verdict_interval == pytest.approx(statistics.t_interval(diffs, 1 - 0.05 / 4), rel=1e-9)


def read_verdict(a: analysis.Assessed, min_effect: float | None, maximize: bool) -> Verdict:
    """The verdict its interval says: inside ±min_effect, at or above 0, at or below 0, or neither."""
    low, high = a.verdict_interval
    if min_effect is not None and -min_effect < low and high < min_effect:
        return Verdict.EQUIVALENT
    if low >= 0:
        return Verdict.BETTER if maximize else Verdict.WORSE
    if high <= 0:
        return Verdict.WORSE if maximize else Verdict.BETTER
    return Verdict.INCONCLUSIVE


@pytest.mark.parametrize("test", ["t", "sign_flip"])
@pytest.mark.parametrize("adjust", ["holm", "bonferroni"])
@pytest.mark.parametrize("min_effect", [None, 0.01])
def test_every_verdict_can_be_read_off_its_interval(test, adjust, min_effect):
    """Random families with mixed effects: each verdict is the one its printed interval shows."""
    overrides = [f"report.test={test}", f"report.adjust={adjust}", "compare.depth=[1, 2, 4, 8]"]
    overrides.append("final.seeds=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]")
    if min_effect:
        overrides.append(f"report.min_effect={min_effect}")
    rng = np.random.default_rng([len(test), len(adjust), int(bool(min_effect))])
    seen: dict[Verdict, int] = {}
    for family in range(60):
        maximize = family % 3 != 0
        objective = [] if maximize else ["objective.metric=val_loss", "objective.direction=minimize"]
        spec = spec_with(*overrides, *objective)
        effects = rng.choice([-0.03, -0.008, 0.0, 0.0, 0.003, 0.012, 0.04], size=4)
        assessed = assessed_family(spec, {d: list(e + rng.normal(0, 0.01, 10)) for d, e in zip([1, 2, 4, 8], effects)})
        for a in assessed:
            assert a.verdict == read_verdict(a, min_effect, maximize), (a.verdict, a.verdict_interval, a.p_adjusted)
            seen[a.verdict] = seen.get(a.verdict, 0) + 1
        if test == "t" and adjust == "holm":
            # Where Holm over the two-sided p-values claims one way only, the claims are the same.
            two_sided = {i for i, p in enumerate(statistics.holm([a.p_t for a in assessed])) if p < 0.05}
            signs = {np.sign(assessed[i].difference.interval.mean) for i in two_sided}
            if len(signs) <= 1:
                assert {i for i, a in enumerate(assessed) if a.p_adjusted < 0.05} == two_sided
    kinds = [Verdict.BETTER, Verdict.WORSE, Verdict.INCONCLUSIVE] + [Verdict.EQUIVALENT] * bool(min_effect)
    assert all(seen.get(k, 0) >= 5 for k in kinds), seen


def test_an_interval_inside_the_margin_without_equivalence_is_widened():
    """Three comparisons are worse, so Holm bounds the fourth's upper side at alpha/2 alone: inside ±0.01,
    though TOST (4 x p = 0.07) does not show equivalence. Its upper side is widened to TOST's interval."""
    spec = spec_with(
        "final.seeds=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "compare.depth=[1, 2, 4, 8]", "report.min_effect=0.01"
    )
    z = np.linspace(-1.0, 1.0, 10)
    z = (z - z.mean()) / z.std(ddof=1)
    small = list(0.0063 + 0.0015 * math.sqrt(10) * z)  # mean 0.0063, standard error 0.0015
    family = {1: list(-0.05 + 0.01 * z), 2: list(-0.06 + 0.01 * z), 4: list(-0.05 + 0.02 * z), 8: small}
    *worse, a = assessed_family(spec, family)
    assert all(w.verdict == Verdict.WORSE for w in worse) and a.verdict == Verdict.BETTER
    assert 4 * statistics.tost_p(small, 0.01) > 0.05
    assert -statistics.t_lower_bound([-x for x in small], 0.025) < 0.01  # the compatible upper bound
    assert a.verdict_interval == pytest.approx((0.0, statistics.t_interval(small, 1 - 2 * 0.05 / 4)[1]))
    assert a.verdict_interval[1] >= 0.01


def test_the_intervals_cover_every_mean_together():
    """Simultaneous coverage at 95%, with some hypotheses rejected (Holm's smaller levels) or all of them."""
    rng = np.random.default_rng(5)
    families = 1000
    for effects in ([0.05, 0.05, -0.05, 0.0, 0.0, 0.0], [0.03, 0.04, 0.05, 0.02]):
        covered = 0
        for _ in range(families):
            samples = [list(e + rng.normal(0, 0.01, 6)) for e in effects]
            decided = statistics.directional(samples, 0.05)
            # A claim's bound of 0 is exclusive: the mean is above (or below) 0.
            covered += all(
                d.interval[0] <= e <= d.interval[1] and d.sign in (0, np.sign(e)) for d, e in zip(decided, effects)
            )
        assert covered / families >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / families)


def test_step_divisors():
    assert statistics.step_divisors([0.001, 0.02, 0.5], 0.05) == [3, 2, 1]
    assert statistics.step_divisors([0.03, 0.02, 0.5], 0.05) == [3, 3, 3]
    assert statistics.step_divisors([0.001, 0.02, 0.5], 0.05, step_down=False) == [3, 3, 3]


@pytest.mark.parametrize("n, alpha", [(2, 0.05), (5, 0.05 / 12), (10, 0.05)])
def test_equivalence_margin_has_the_power_it_claims(n, alpha):
    """At the returned margin, TOST at `alpha` shows equivalence in 80% of simulated null studies."""
    sd = 0.01
    margin = statistics.equivalence_margin(n, sd, alpha)
    draws = np.random.default_rng(n).normal(0, sd, size=(40_000, n))
    mean, se = draws.mean(axis=1), draws.std(axis=1, ddof=1) / math.sqrt(n)
    tost = np.maximum(stats.t.sf((mean + margin) / se, n - 1), stats.t.cdf((mean - margin) / se, n - 1))
    assert tost[0] == pytest.approx(statistics.tost_p(draws[0], margin))
    assert np.mean(tost < alpha) == pytest.approx(0.8, abs=3 * math.sqrt(0.16 / 40_000))
    # With many seeds the normal approximation (z_alpha + z_0.1) sd / sqrt(n) is close.
    approximate = (stats.norm.isf(alpha) + stats.norm.isf(0.1)) * sd / math.sqrt(n)
    assert margin > approximate


def test_dry_run_states_the_equivalence_margin():
    from reuse_nets.design import plan

    spec = study_files.load_study("strategy_depth", ["report.assumed_sd=0.005", "report.min_effect=0.01"])
    margin = statistics.equivalence_margin(5, 0.005, 0.05 / 12)
    lines = plan.power_lines(spec)
    assert f"TOST shows equivalence within ±{margin:.4f} at alpha/12" in lines[1]
    assert "warning: report.min_effect (0.01) is below the margin TOST shows with 80% power" in lines[-1]
