"""Which worker runs what: each starts on its own share of the cells."""

import os

import pytest

from reuse_nets.design import plan, study_files
from reuse_nets.sweep import worker_share
from reuse_nets.train import execution


def jobs_of(*overrides):
    spec = study_files.load_study("residual_depth", [*overrides])
    return spec, plan.tune_jobs(spec)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_workers_start_on_disjoint_shares_and_each_sees_every_job(count):
    _, jobs = jobs_of()
    firsts = []
    for index in range(1, count + 1):
        order = worker_share.worker_order(jobs, index, count)
        assert sorted(j.study_name for j in order) == sorted(j.study_name for j in jobs)
        firsts.append(order[0].study_name)
    assert len(set(firsts)) == min(count, len(jobs))


def test_the_final_slots_are_split_by_cell_over_the_workers():
    spec = study_files.load_study("smoke", ["final.seeds=[1, 2, 3]"])
    job = plan.final_job(spec, {})
    shares = [worker_share.worker_slots(job, index, 3) for index in (1, 2, 3)]
    assert set().union(*shares) == set(range(len(job.slots)))
    assert sum(len(share) for share in shares) == len(job.slots)  # disjoint
    # Every seed of a cell goes to the same worker.
    for cell in spec.cells():
        slots = {slot for slot, (c, _) in enumerate(job.slots) if c.key == cell.key}
        assert sum(slots <= share for share in shares) == 1, cell.key


# --- where: one GPU per worker, where there are GPUs (none on the CI machine) ---


def test_visible_gpus_come_from_cuda_visible_devices_when_it_is_set():
    assert execution.visible_gpus({"CUDA_VISIBLE_DEVICES": "0, 2"}) == ["0", "2"]
    assert execution.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert execution.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_visible_gpus_are_listed_by_nvidia_smi_otherwise(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100 (UUID: GPU-1)'\necho 'GPU 1: NVIDIA A100 (UUID: GPU-2)'\n")
    smi.chmod(0o755)
    assert execution.visible_gpus({}, nvidia_smi=str(smi)) == ["0", "1"]
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\nexit 9\n")
    broken.chmod(0o755)
    assert execution.visible_gpus({}, nvidia_smi=str(broken)) == []


def test_workers_take_the_gpus_round_robin_and_none_without_gpus(monkeypatch):
    assert [execution.gpu_for_worker(i, ["0", "1"]) for i in (1, 2, 3)] == ["0", "1", "0"]
    assert execution.gpu_for_worker(1, []) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert execution.place_worker(2) == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
