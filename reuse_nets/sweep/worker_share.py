"""Which worker runs what: each architecture's trials in the process that compiled it."""

from __future__ import annotations

from reuse_nets.design.plan import Job


def _share(items: int, index: int, count: int) -> range:
    """Worker `index`'s (1..count) contiguous share of `items` things."""
    return range((index - 1) * items // count, index * items // count)


def worker_order(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The jobs (cells, when tuning) rotated so that worker `index` of `count` starts
    with its own share; it then helps with the others' as they run out.

    Each process keeps its compiled trainers (`train.trainers`): workers that start
    on different cells compile each architecture about once, where workers all
    taking the same cell's trials in turn would each compile every architecture.
    """
    start = _share(len(jobs), index, count).start
    return jobs[start:] + jobs[:start]


def worker_slots(job: Job, index: int, count: int) -> set[int]:
    """Slots of worker `index`'s share of the cells in a job whose slots span cells."""
    cells = list(dict.fromkeys(cell.key for cell, _ in job.slots))
    mine = {cells[i] for i in _share(len(cells), index, count)}
    return {slot for slot, (cell, _) in enumerate(job.slots) if cell.key in mine}
