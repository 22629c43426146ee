"""What the benchmark runs: the model sizes, repetitions and studies of its two plans.

Every number the benchmark's sections use comes from a `Plan` here: `FULL` for the
README's table, `QUICK` (toy sizes, same sections, 3.5-4.5 minutes here) for tests.
"""

from __future__ import annotations

import dataclasses

# The benchmark's sections, in the order it runs them (see `bench.benchmark`).
SECTIONS = ("ceiling", "training", "sweep", "startup", "pruning", "profile", "workers", "soak", "memory", "runners")
# Run only when named in `--sections`: `memory` probes a runner for minutes, `runners`
# starts PostgreSQL, `mlflow server` and many runners.
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s not in ("memory", "runners"))


@dataclasses.dataclass(frozen=True)
class Size:
    """One measured network: depth x width, and how many examples an epoch holds."""

    depth: int
    width: int
    examples: int  # per epoch: enough steps that per-epoch costs do not dominate


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything the benchmark runs; `FULL` and `QUICK` are the two plans."""

    sizes: tuple[Size, ...]
    batch_size: int
    epochs: int  # per measured fit; the first (tracing, compiling) is not timed
    repeats: int  # interleaved repetitions of each variant
    xla: bool  # also measure the framework with XLA
    sweep_overrides: tuple[str, ...]  # applied to experiments/smoke.yaml
    study_overrides: tuple[str, ...]  # applied to experiments/pruning_check.yaml (pruning, workers)
    startup_repeats: int
    matmul_size: int
    profile_study: str = "residual_depth"  # run by the command: profile (cache off / on) and workers
    profile_overrides: tuple[str, ...] = ()
    soak_study: str = "residual_depth"  # soak: many short trials in one process (`bench.soak`)
    soak_overrides: tuple[str, ...] = ()
    memory_study: str = "residual_depth"  # memory: short trials in one probed process (`bench.memory`)
    memory_overrides: tuple[str, ...] = ()
    runners: int = 8  # runners: processes at once on one study, via PostgreSQL and `mlflow server` (`bench.runners`)
    runners_study: str = "smoke"
    runners_overrides: tuple[str, ...] = ()


def runners_overrides(strategies: str, seeds: int) -> tuple[str, ...]:
    """smoke's `strategies` at depth 1 x `seeds` final runs: one epoch on 500 images each, no tuning.

    The project's default heartbeat (every 10 s, dead after 40 s), not smoke's 2 s and 8 s:
    many runners share few cores here.
    """
    return (
        "name=runners",
        f"compare.strategy=[{strategies}]",
        "compare.depth=[1]",
        "base.width=16",
        "base.epochs=1",
        "base.dataset.train_split=train[:500]",
        "base.dataset.validation_split=train[50000:50200]",
        "base.dataset.test_split=test[:200]",
        f"final.seeds=[{', '.join(map(str, range(seeds)))}]",
        "execution.heartbeat_interval=10",
        "execution.grace_period=40",
    )


def soak_overrides(trials_per_cell: int) -> tuple[str, ...]:
    """Two cells (plain, residual at depth 2) x `trials_per_cell` one-epoch trials on 500 images, then 2 final runs."""
    return (
        "compare.depth=[2]",
        "base.width=16",
        "base.epochs=1",
        "base.dataset.train_split=train[:500]",
        "base.dataset.validation_split=train[50000:50200]",
        "base.dataset.test_split=test[:200]",
        f"tune.trials_per_cell={trials_per_cell}",
        "tune.sampler.type=random",
        "tune.pruner.type=none",
        "final.seeds=[1]",
    )


FULL = Plan(
    sizes=(Size(8, 128, 20480), Size(64, 128, 5120), Size(8, 512, 10240), Size(64, 512, 2560)),
    batch_size=256,
    epochs=3,
    repeats=3,
    xla=True,
    sweep_overrides=(
        "base.dataset.train_split=train[:20000]",
        "base.width=128",
        "base.epochs=3",
        "compare.depth=[2, 8]",
    ),
    study_overrides=(),
    startup_repeats=3,
    matmul_size=2048,
    # Depth-heavy: 4 cells (plain, residual x depth 16, 64), 3 tuning trials and 2
    # final seeds each (20 trials), unpruned so that both runs train the same epochs.
    profile_overrides=(
        "compare.depth=[16,64]",
        "base.dataset.train_split=train[:10000]",
        "base.epochs=3",
        "tune.trials_per_cell=3",
        "tune.sampler.n_startup_trials=2",
        "tune.pruner.type=none",
        "final.seeds=[1,2]",
    ),
    soak_overrides=soak_overrides(100),  # 202 trials
    memory_overrides=soak_overrides(200),  # the soak's study, twice as long: 402 trials
    runners=8,
    runners_overrides=runners_overrides("plain, residual", 32),  # 64 slots
)
QUICK = Plan(
    sizes=(Size(2, 32, 2048),),
    batch_size=256,
    epochs=2,
    repeats=1,
    xla=False,
    sweep_overrides=("compare.strategy=[plain, residual]", "compare.depth=[1]", "base.epochs=1"),
    study_overrides=(
        "compare.strategy=[plain]",
        "compare.depth=[1]",
        "tune.trials_per_cell=3",
        "base.epochs=2",
        "final.seeds=[1]",
        "tune.pruner.n_startup_trials=1",
        "base.dataset.train_split=train[:1000]",
        "base.dataset.validation_split=train[50000:50500]",
        "base.dataset.test_split=test[:500]",
    ),
    startup_repeats=1,
    matmul_size=512,
    profile_overrides=(
        "compare.depth=[2]",
        "base.width=16",
        "base.dataset.train_split=train[:1000]",
        "base.dataset.validation_split=train[50000:50500]",
        "base.dataset.test_split=test[:500]",
        "base.epochs=2",
        "tune.trials_per_cell=2",
        "tune.sampler.n_startup_trials=1",
        "tune.pruner.type=none",
        "final.seeds=[1]",
    ),
    soak_overrides=soak_overrides(10),  # 22 trials
    memory_overrides=soak_overrides(3),  # 8 trials
    runners=2,
    runners_overrides=runners_overrides("plain", 4),  # 4 slots
)
