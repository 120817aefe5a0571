"""Data parallel: scripts/run_distribute_train.sh with msrun on CPU, 2 workers on the bundled data.

Three real runs (module fixture `runs`), each through the launcher with tests/training/distributed_worker.py
(train.py that also saves every worker's final parameters and the training mixtures it was given):
  two      2 workers x batch 2, 2 epochs;
  one      1 worker x batch 4 (same global batch), 2 epochs, started from scripts/;
  resumed  2 workers, started in a fresh experiment holding only `two`'s epoch-1 checkpoint
           (what a run stopped after epoch 1 leaves), resumes and trains epoch 2.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest

from src.data.dataset import iterate_utterances
from src.runtime import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, "scripts", "run_distribute_train.sh")
WORKER = os.path.join(ROOT, "tests", "training", "distributed_worker.py")
GLOBAL_BATCH, EPOCHS, TRAIN_ROWS = 4, 2, 8


def overrides(data_dir, exp_dir):
    return [f"experiment_dir={exp_dir}", f"data.train={data_dir}/train.mindrecord0",
            f"data.valid={data_dir}/valid.mindrecord0", "model.N=16", "model.H=16", "model.R=1",
            "segment=0.5", f"train.batch_size={GLOBAL_BATCH}", f"train.epochs={EPOCHS}", "train.valid_every=2",
            "train.keep_checkpoints=2"]


def launch(args, exp_dir, cwd=ROOT, timeout=480, **env):
    """Run the launcher with `args` -> (returncode, stdout, stderr, seconds). On a timeout, kill
    every process of the run (found by `exp_dir` in its command line) and fail."""
    env = {**os.environ, "TRAIN_SCRIPT": WORKER, **env}
    start = time.time()
    proc = subprocess.Popen(["bash", LAUNCHER, *map(str, args)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        for p in run_processes(exp_dir):
            p.kill()
        out, err = proc.communicate()
        pytest.fail(f"the launcher did not finish in {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err, time.time() - start


def run_processes(exp_dir):
    """Live processes whose command line mentions `exp_dir` (the run's workers, msrun, scheduler)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(exp_dir) in part for part in p.info["cmdline"] or ()) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def train_run(tiny_data, exp_dir, device_num, cwd=ROOT):
    dump = exp_dir + "_dump"
    os.makedirs(dump, exist_ok=True)
    code, out, err, _ = launch([device_num, "configs/demo.yaml", *overrides(tiny_data, exp_dir)], exp_dir,
                               cwd=cwd, DIST_TEST_DUMP_DIR=dump)
    assert code == 0, f"{out[-4000:]}\n{err[-4000:]}"
    dumps = [dict(np.load(os.path.join(dump, f"rank_{r}.npz"))) for r in range(device_num)]
    history = [{k: v for k, v in h.items() if not k.endswith("_time")}          # without timings
               for h in checkpoint(exp_dir, EPOCHS)[1]["state"]["history"]]
    return {"exp": exp_dir, "out": out, "dumps": dumps, "history": history}


def checkpoint(exp_dir, epoch):
    params, meta = ckpt.read_checkpoint(os.path.join(ckpt.checkpoint_dir(exp_dir), f"epoch_{epoch:04d}.ckpt"))
    return {k: v.asnumpy() for k, v in params.items()}, meta


def params_of(dump):
    return {k[len("param/"):]: v for k, v in dump.items() if k.startswith("param/")}


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    two = train_run(tiny_data, str(tmp / "two"), 2)
    one = train_run(tiny_data, str(tmp / "one"), 1, cwd=os.path.join(ROOT, "scripts"))
    resumed_dir = str(tmp / "resumed")
    os.makedirs(ckpt.checkpoint_dir(resumed_dir))
    shutil.copy(os.path.join(ckpt.checkpoint_dir(two["exp"]), "epoch_0001.ckpt"), ckpt.checkpoint_dir(resumed_dir))
    resumed = train_run(tiny_data, resumed_dir, 2)
    return {"two": two, "one": one, "resumed": resumed}


def test_workers_hold_identical_parameters(runs):
    for run in (runs["two"], runs["resumed"]):
        rank0, rank1 = (params_of(d) for d in run["dumps"])
        assert rank0.keys() == rank1.keys() and any(k.startswith("moment1.") for k in rank0)
        for name in rank0:                                   # weights and Adam state, bit for bit
            np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    saved, _ = checkpoint(runs["two"]["exp"], EPOCHS)        # worker 0 saved what it trained
    first, _ = checkpoint(runs["two"]["exp"], 1)
    rank0 = params_of(runs["two"]["dumps"][0])
    for name in saved:
        np.testing.assert_array_equal(saved[name], rank0[name], err_msg=name)
    assert int(rank0["adam_step"].item()) == EPOCHS * TRAIN_ROWS // GLOBAL_BATCH     # updates taken
    assert any(not np.array_equal(first[n], saved[n]) for n in saved if "." in n)   # training changed them


def test_an_epoch_visits_every_row_once(runs, tiny_data):
    rows = [u["mix"] for u in iterate_utterances(f"{tiny_data}/train.mindrecord0", 8000, 2)]
    assert len(rows) == TRAIN_ROWS
    for epoch in range(1, EPOCHS + 1):
        per_worker = [d[f"epoch{epoch}/mix"] for d in runs["two"]["dumps"]]
        assert all(m.shape == (TRAIN_ROWS // GLOBAL_BATCH, GLOBAL_BATCH // 2, 4000) for m in per_worker)
        seen = [source_row(crop, rows) for m in per_worker for crop in m.reshape(-1, m.shape[-1])]
        assert sorted(seen) == list(range(TRAIN_ROWS)), f"epoch {epoch}: rows {seen}"


def source_row(crop, rows):
    """Index of the one row `crop` was cut from (a segment of it, or all of it zero-padded)."""
    found = []
    for index, row in enumerate(rows):
        if len(row) <= len(crop):
            match = np.array_equal(crop[:len(row)], row) and not crop[len(row):].any()
        else:
            starts = np.flatnonzero(row[:len(row) - len(crop) + 1] == crop[0])
            match = any(np.array_equal(row[s:s + len(crop)], crop) for s in starts)
        if match:
            found.append(index)
    assert len(found) == 1, f"a training crop matches rows {found}"
    return found[0]


def test_two_workers_match_one_worker_with_the_same_global_batch(runs):
    two, one = runs["two"], runs["one"]
    for epoch in range(1, EPOCHS + 1):      # step k of the 2 workers together = step k of 1 worker
        joined = np.concatenate([d[f"epoch{epoch}/mix"] for d in two["dumps"]], axis=1)
        single = one["dumps"][0][f"epoch{epoch}/mix"]
        assert joined.shape == single.shape
        for step in range(len(single)):
            np.testing.assert_array_equal(np.sort(joined[step], axis=0), np.sort(single[step], axis=0))
    loss_two = [h["train_loss"] for h in two["history"]]
    loss_one = [h["train_loss"] for h in one["history"]]
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)
    assert loss_two[1] != loss_two[0]
    params_two, params_one = params_of(two["dumps"][0]), params_of(one["dumps"][0])
    for name in params_one:
        np.testing.assert_allclose(params_two[name], params_one[name], rtol=1e-4, atol=1e-5, err_msg=name)
    # validation: 3 utterances split 2 + 1 over the workers, combined into one mean
    for key in ("valid_si_snri", "valid_sdri"):
        assert two["history"][-1][key] == pytest.approx(one["history"][-1][key], abs=1e-4)


def test_resumed_run_matches_the_uninterrupted_one(runs):
    two, resumed = runs["two"], runs["resumed"]
    assert "resuming from" in resumed["out"]
    for rank in (0, 1):                      # epoch 1 was not trained again; epoch 2 got the same data
        assert "epoch1/mix" not in resumed["dumps"][rank]
        np.testing.assert_array_equal(resumed["dumps"][rank]["epoch2/mix"], two["dumps"][rank]["epoch2/mix"])
    assert resumed["history"] == two["history"]
    full, _ = checkpoint(two["exp"], EPOCHS)
    again, _ = checkpoint(resumed["exp"], EPOCHS)
    assert full.keys() == again.keys()
    for name in full:
        np.testing.assert_array_equal(full[name], again[name], err_msg=name)


def test_logs_and_files_come_from_worker_0(runs):
    exp = runs["two"]["exp"]
    names = sorted(os.listdir(ckpt.checkpoint_dir(exp)))
    assert names == ["best.ckpt", "epoch_0001.ckpt", "epoch_0002.ckpt"]
    with open(os.path.join(exp, "train.log"), encoding="utf-8") as f:
        log = f.read()
    assert log.count("epoch 1: train_loss=") == 1 and "workers=2" in log
    logs = os.path.join(exp, "distribute_logs")
    assert {"worker_0.log", "worker_1.log"} <= set(os.listdir(logs))
    with open(os.path.join(exp, "train_distribute.log"), encoding="utf-8") as f:
        combined = f.read()
    assert "[worker 0] " in combined and "[worker 1] " in combined and "epoch 2: train_loss=" in combined
    assert "all 2 worker(s) finished" in combined


def test_a_failing_worker_stops_the_others(tiny_data, tmp_path):
    exp = str(tmp_path / "failing")
    code, out, err, seconds = launch([2, "configs/demo.yaml", *overrides(tiny_data, exp)], exp, timeout=300,
                                     DIST_TEST_FAIL_RANK="1")
    assert code == 1, out + err
    assert "worker 1 failed" in err and "injected failure of worker 1" in err
    assert seconds < 150                     # not msrun's 600 s cluster timeout
    assert not run_processes(exp)            # worker 0, msrun and its scheduler are gone


def rank_table(folder, devices):
    """An HCCL rank table (version 1.0) for one server with `devices` devices -> its path."""
    path = os.path.join(folder, f"hccl_{devices}p.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": "1.0", "server_count": "1", "status": "completed", "server_list": [
            {"server_id": "10.0.0.1", "device": [{"device_id": str(7 - i), "device_ip": f"192.168.1.{i}",
                                                  "rank_id": str(i)} for i in range(devices)]}]}, f)
    return path


@pytest.mark.parametrize("args, env, message", [
    (["3", "configs/demo.yaml"], {}, "train.batch_size=4 is the global batch and must be divisible by DEVICE_NUM=3"),
    (["2", "configs/missing.yaml"], {}, "config not found"),
    (["2", "False", "{table2}"], {}, "for one device use scripts/run_standalone_train.sh"),
    (["2", "True", "/no/hccl_2p.json", "configs/demo.yaml"], {}, "/no/hccl_2p.json: not a readable HCCL rank table"),
    (["4", "True", "{table2}", "configs/demo.yaml"], {}, "hccl_2p.json: has 2 devices but DEVICE_NUM=4"),
    (["2", "configs/demo.yaml"], {"RANK_TABLE_FILE": "{table2}"}, "is for Ascend (HCCL) but the device is CPU"),
])
def test_the_launcher_refuses_bad_arguments(args, env, message, tmp_path):
    """Refused before anything starts. ModelZoo form: DEVICE_NUM DISTRIBUTE RANK_TABLE_FILE [CONFIG]."""
    table = rank_table(str(tmp_path), 2)
    args = [a.format(table2=table) for a in args]
    env = {k: v.format(table2=table) for k, v in env.items()}
    # from scripts/: CONFIG is found relative to the repository root too
    code, out, err, _ = launch([*args, f"experiment_dir={tmp_path}"], str(tmp_path),
                               cwd=os.path.join(ROOT, "scripts"), timeout=120, **env)
    assert code == 2 and message in err, out + err
    assert not os.path.exists(tmp_path / "distribute_logs")


@pytest.mark.parametrize("epochs, refused", [((2, 2), False), ((0, 0, 0), False), ((2, 0), True), ((1, 3, 2), True)])
def test_workers_must_resume_from_the_same_epoch(epochs, refused, monkeypatch):
    """Workers that found different latest checkpoints (e.g. experiment_dir not shared between
    machines) are stopped; here the all-reduce is simulated for worker 0 of len(epochs) workers."""
    from src.training import trainer
    from src.runtime.device import RunInfo
    def all_reduce_sum(values):           # worker 0's values plus what the others send
        return np.asarray(values, np.float64) + np.sum([[e, e * e] for e in epochs[1:]], axis=0)
    monkeypatch.setattr(trainer, "all_reduce_sum", all_reduce_sum)
    info = RunInfo("CPU", rank=0, group_size=len(epochs))
    if refused:
        with pytest.raises(trainer.TrainingError, match="not every worker found the same latest checkpoint"):
            trainer._check_workers_resume_alike(epochs[0], info)
    else:
        trainer._check_workers_resume_alike(epochs[0], info)
