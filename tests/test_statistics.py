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
from reuse_nets.report import analysis
from reuse_nets.report.analysis import Outcome
from reuse_nets.spec import study_files

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
        any(a.outcome in (Outcome.BETTER, Outcome.WORSE) for a in simulated_family(spec, rng, 0.0, 0.01))
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
    found = [a.outcome for _ in range(50) for a in simulated_family(spec, rng, 0.03, 0.005)]
    assert found.count(Outcome.BETTER) >= 0.95 * len(found)
    same = [a.outcome for _ in range(50) for a in simulated_family(spec, rng, 0.0, 0.003)]
    assert same.count(Outcome.EQUIVALENT) >= 0.8 * len(same)
    # Family-wise error 0.05 per family of 2: a few false claims among 100 are expected.
    assert same.count(Outcome.BETTER) + same.count(Outcome.WORSE) <= 0.1 * len(same)
    without = spec_with("final.seeds=[1, 2, 3, 4, 5, 6, 7, 8]", "compare.depth=[1, 2]")
    assert all(a.outcome != Outcome.EQUIVALENT for a in simulated_family(without, rng, 0.0, 0.003))


def test_the_sign_flip_verdict_cannot_claim_with_five_seeds():
    spec = spec_with("final.seeds=[1, 2, 3, 4, 5]", "compare.depth=[64]", "report.test=sign_flip")
    tests = {"strategy=plain,depth=64": [0.5, 0.6, 0.55, 0.52, 0.58], "strategy=residual,depth=64": [0.85] * 5}
    (assessed,) = analysis.assess(spec, analysis.paired_differences(spec, runs_from(spec, tests)))
    assert assessed.p_sign_flip == pytest.approx(0.0625) and assessed.outcome == Outcome.INCONCLUSIVE
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
    assert assessed.p_adjusted < 0.05 and assessed.outcome == Outcome.EQUIVALENT
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
    assert all(a.p_sign_flip == pytest.approx(2 / 64) and a.outcome == Outcome.INCONCLUSIVE for a in assessed)
    assert "0.2188 after adjusting for 7 comparisons" in analysis.family_text(spec, assessed)


def test_dry_run_states_the_family_and_the_detectable_difference():
    from reuse_nets.spec import plan

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
    measured = plan.power_lines(spec, (0.002, None, "pilot p"))
    assert f"{statistics.detectable_difference(5, 0.002, 0.05 / 12):.4f} at alpha/12" in measured[1]
    assert "SD of 0.002 (pilot p)" in measured[1]
    # A pilot that repeated its tuning: with repeats here, a unit's SD adds the tuning's.
    tuned = study_files.load_study("strategy_depth", ["tune.repeats=3"])
    line = plan.power_lines(tuned, (0.004, 0.003, "pilot q"))[1]
    assert f"with 3 tuning repeats and a paired-difference SD of {math.sqrt(0.003**2 + 0.004**2 / 5):.4g}" in line
    assert "lower bound" not in line
    assert "between tuning runs the pilot's SD was 0.003" in plan.power_lines(spec, (0.004, 0.003, "pilot q"))[1]
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

    monkeypatch.chdir(tmp_path)
    assert run_command.main(["--study", "strategy_depth", "--dry-run", "--set", "report.pilot=smoke"]) == 0
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no optuna.db
    found = run_command.pilot_spread("smoke", None)
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
        clustered += any(a.outcome in (Outcome.BETTER, Outcome.WORSE) for a in assessed)
        # What one tuning run's seeds alone would say, unadjusted.
        naive += any(statistics.t_test(d.by_repeat[0]) < 0.05 for d in differences)
    assert clustered / families <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / families)
    assert naive / families > 0.5
