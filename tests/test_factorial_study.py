"""A factorial study with a declared interaction: the shipped `skip_identity` study
(strategy x start_as_identity, early stopping, warm-up and cosine decay), shrunk to a
tiny size, runs on real fashion_mnist in-process. Its interaction contrast joins the
Holm family beside the strategy comparisons, with its own rows in the report and in
`results.comparisons`, and an interval that agrees with its verdict.
"""

import mlflow
import pytest

from reuse_nets.design import study_files
from reuse_nets.report import results
from reuse_nets.sweep import runner

pytestmark = pytest.mark.slow

# 4 cells x 1 tuning trial, then 4 cells x 3 seeds: 16 runs of at most 3 epochs on 1000 images.
OVERRIDES = [
    "base.dataset.train_split=train[:1000]",
    "base.dataset.validation_split=train[50000:50300]",
    "base.dataset.test_split=test[:300]",
    "base.width=16",
    "base.epochs=3",
    "base.patience=1",
    "base.batch_size=128",
    "compare.depth=[2]",
    "tune.search_space.learning_rate=[0.003]",
    "final.seeds=[1, 2, 3]",
    "execution.heartbeat_interval=2",
    "execution.grace_period=8",
]


@pytest.fixture(scope="module")
def factorial(tmp_path_factory, data_source):
    folder = tmp_path_factory.mktemp("skip_identity")
    spec = study_files.load_study("skip_identity", OVERRIDES)
    storage, tracking_uri = f"sqlite:///{folder}/optuna.db", f"sqlite:///{folder}/mlflow.db"
    options = runner.SweepOptions(
        storage=storage, tracking_uri=tracking_uri, data=data_source, reports=str(folder / "reports"), verbose=False
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(folder)
        try:
            result = runner.run_study(spec, options)
            comparisons = results.comparisons(spec, storage=storage, tracking_uri=tracking_uri)
            pairs_only = spec.model_copy(update={"report": spec.report.model_copy(update={"contrasts": ()})})
            without = results.comparisons(pairs_only, storage=storage, tracking_uri=tracking_uri)
        finally:
            mlflow.set_tracking_uri(None)
    assert result.complete
    return spec, folder, comparisons, without


def test_the_interaction_is_in_the_holm_family_with_the_strategy_comparisons(factorial):
    spec, _, frame, without = factorial
    # residual vs plain at each start (2), then the interaction and the averaged main effect (1 each).
    assert list(frame["comparison"]) == [
        "residual − plain",
        "residual − plain",
        "skip x identity",
        "identity start",
    ]
    assert list(frame["declared"]) == [False, False, True, True]
    assert len(frame) == spec.family_size == 4
    # The contrasts joined the family: the same pairs, adjusted over 2 comparisons instead of 4, get
    # adjusted p-values no larger, and no adjusted p is below its unadjusted one-sided p.
    assert list(without["comparison"]) == ["residual − plain"] * 2
    assert list(without["per_unit"]) == list(frame["per_unit"][:2])
    assert all(alone <= joined for alone, joined in zip(without["p_adjusted"], frame["p_adjusted"][:2], strict=True))
    assert all(adjusted >= p / 2 for adjusted, p in zip(frame["p_adjusted"], frame["p_t"], strict=True))
    # The interaction is the difference of the two strategy differences, seed by seed.
    pairs = frame[~frame["declared"]].set_index("condition")["per_unit"]
    assert list(pairs.index) == ["start_as_identity=False,depth=2", "start_as_identity=True,depth=2"]
    (interaction,) = frame[frame["comparison"] == "skip x identity"]["per_unit"]
    identity, standard = pairs["start_as_identity=True,depth=2"], pairs["start_as_identity=False,depth=2"]
    expected = [a - b for a, b in zip(identity, standard, strict=True)]
    assert interaction == pytest.approx(expected, abs=1e-12)


def test_each_verdict_agrees_with_the_interval_printed_beside_it(factorial):
    spec, _, frame, _ = factorial
    for row in frame.itertuples():
        low, high = row.low, row.high
        assert low <= row.mean <= high
        if row.verdict == "better":
            assert low >= 0
        elif row.verdict == "worse":
            assert high <= 0
        elif row.verdict == "equivalent":
            assert -spec.report.min_effect <= low and high <= spec.report.min_effect
        else:
            assert row.verdict == "inconclusive"


def test_the_report_shows_the_contrasts_and_how_each_cell_stopped(factorial):
    spec, folder, _, _ = factorial
    report = (folder / "reports" / spec.name / "report.md").read_text()
    assert "Declared contrast **skip x identity**: the interaction (strategy=residual − strategy=plain) × " in report
    rows = [line for line in report.splitlines() if line.startswith("| start_as_identity=") or "| depth=2 |" in line]
    assert any("| skip x identity |" in line for line in rows), rows
    assert "over the 4 comparisons" in report
    # Early stopping: epochs trained and plateau / cap per cell, instead of the still-rising test.
    stopping = [line for line in report.splitlines() if line.startswith("| strategy=") and "early stopping" in line]
    assert len(stopping) == 4, stopping
    for line in stopping:
        epochs, ends = line.rstrip(" |").split(" | ")[-2:]
        plateau, cap = map(int, ends.split(" / "))
        assert plateau + cap == 3 and 1 <= float(epochs.split(" ")[0]) <= 3
