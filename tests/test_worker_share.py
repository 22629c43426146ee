"""Which worker runs what: each starts on its own share of the cells."""

import pytest

from reuse_nets.spec import plan, study_files
from reuse_nets.sweep import phases


def jobs_of(*overrides):
    spec = study_files.load_study("residual_depth", [*overrides])
    return spec, plan.tune_jobs(spec)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_workers_start_on_disjoint_shares_and_each_sees_every_job(count):
    _, jobs = jobs_of()
    firsts = []
    for index in range(1, count + 1):
        order = phases.worker_order(jobs, index, count)
        assert sorted(j.study_name for j in order) == sorted(j.study_name for j in jobs)
        firsts.append(order[0].study_name)
    assert len(set(firsts)) == min(count, len(jobs))


def test_the_final_slots_are_split_by_cell_over_the_workers():
    spec = study_files.load_study("smoke", ["final.seeds=[1, 2, 3]"])
    job = plan.final_job(spec, {})
    shares = [phases.worker_slots(job, index, 3) for index in (1, 2, 3)]
    assert set().union(*shares) == set(range(len(job.slots)))
    assert sum(len(share) for share in shares) == len(job.slots)  # disjoint
    # Every seed of a cell goes to the same worker.
    for cell in spec.cells():
        slots = {slot for slot, (c, _) in enumerate(job.slots) if c.key == cell.key}
        assert sum(slots <= share for share in shares) == 1, cell.key
