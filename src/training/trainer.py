"""The training loop shared by every task: epochs, validation, checkpoints, automatic resume.

Everything a run needs to continue bit-identically is in its epoch checkpoints: weights, optimizer
state, lr-schedule state, counters, history, best score and the resolved config. The data order of
an epoch is a function of (seed, epoch), so resuming after epoch k replays epoch k+1 exactly.
"""
import json
import logging
import math
import os
import shutil
import time

import mindspore as ms
import numpy as np
from tqdm import tqdm

from src.config import save_config
from src.errors import UserError, check_output_dir
from src.tasks import get_task
from src.runtime import checkpoint as ckpt
from src.runtime.device import all_reduce_sum, init_context
from src.training.lr_schedule import build_lr_schedule, schedule_settings
from src.training.step import TrainStep, build_optimizer

log = logging.getLogger("gdprnn")

# config entries that must not change when resuming (they change what the checkpoint means)
_RESUME_FIXED = ("task", "sample_rate", "model")


class TrainingError(UserError):
    """Training cannot go on; the message says why and what was kept."""


def _setup_logging(exp_dir, is_main):
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler()]          # every worker: its own console / worker log
    if is_main:                                   # worker 0 alone writes the experiment's log file
        os.makedirs(exp_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(exp_dir, "train.log")))
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)


def _check_resume_config(cfg, stored, path):
    changed = [key for key in _RESUME_FIXED if stored.get(key) != cfg.get(key)]
    if changed:
        raise TrainingError(
            f"{path} was trained with a different {', '.join(changed)} than the current config. "
            "Pass --restart to start this experiment over, or use another experiment_dir.")


def _archive_old_run(exp_dir):
    """--restart: move earlier checkpoints and history aside instead of deleting them."""
    old = ckpt.checkpoint_dir(exp_dir)
    if os.path.isdir(old):
        dest = os.path.join(exp_dir, "previous_runs", time.strftime("%Y%m%d-%H%M%S"))
        os.makedirs(dest, exist_ok=True)
        for name in (ckpt.CHECKPOINT_DIR, "history.json", "train.log"):
            if os.path.exists(os.path.join(exp_dir, name)):
                shutil.move(os.path.join(exp_dir, name), os.path.join(dest, name))
        return dest
    return None


def _check_workers_resume_alike(epoch, info):
    """All data-parallel workers must start from the same epoch checkpoint (or all from scratch)."""
    total, squares = all_reduce_sum([epoch, epoch * epoch])
    if total * total != squares * info.group_size:      # equal only when every worker has `epoch`
        raise TrainingError(
            f"worker {info.rank} would resume after epoch {epoch}, but not every worker found the same "
            "latest checkpoint: experiment_dir must be one directory all workers see (a shared file system "
            "on multi-node runs)")


def train(cfg, restart=False, distributed=False):
    """Train (or resume) the experiment described by `cfg`. Returns the final state dict."""
    info = init_context(cfg, distributed)
    exp_dir = cfg.experiment_dir
    if info.is_main:
        check_output_dir(exp_dir, "experiment_dir")
    _setup_logging(exp_dir, info.is_main)
    task = get_task(cfg.task)
    train_cfg = cfg.train
    if train_cfg.batch_size % info.group_size:
        raise TrainingError(f"train.batch_size={train_cfg.batch_size} is the global batch and must be "
                            f"divisible by the number of workers ({info.group_size})")

    net = task.build_network(cfg)
    optimizer = build_optimizer(net, train_cfg)
    schedule = build_lr_schedule(train_cfg)
    state = {"epoch": 0, "step": 0, "best_score": None, "best_epoch": None,
             "nonfinite_steps": 0, "validation_pending": False, "history": []}

    if restart and info.is_main:
        archived = _archive_old_run(exp_dir)
        if archived:
            log.info(f"--restart: earlier checkpoints moved to {archived}")
    resume_from = None if restart else ckpt.latest_checkpoint(exp_dir)
    if resume_from:
        params, meta = ckpt.read_checkpoint(resume_from)
        stored = ckpt.stored_config(meta)
        _check_resume_config(cfg, stored, resume_from)
        ckpt.check_no_extra(net, params, resume_from)
        ckpt.load_into(net, params, resume_from)
        ckpt.load_into(optimizer, params, resume_from, what="optimizer")
        state = meta["state"]
        log.info(f"resuming from {resume_from} (epoch {state['epoch']}, step {state['step']})")
        if schedule_settings(stored.train) == schedule_settings(train_cfg):   # the same schedule: go on
            schedule.load_state_dict(meta["lr_schedule"])
        else:
            schedule.step(state["epoch"])
            log.info(f"train.lr / train.lr_decay differ from {resume_from}'s: the configured schedule "
                     f"goes on from epoch {state['epoch'] + 1}, at lr {schedule.lr:g}")
    elif train_cfg.init_from:
        fresh = ckpt.load_matching(net, ckpt.read_checkpoint(train_cfg.init_from)[0], train_cfg.init_from)
        log.info(f"initialised from {train_cfg.init_from}; {len(fresh)} parameter(s) left fresh"
                 + (f": {', '.join(fresh)}" if fresh else ""))
    if info.distributed:
        _check_workers_resume_alike(state["epoch"], info)
    if info.is_main:
        save_config(cfg, os.path.join(exp_dir, "config.yaml"))
    log.info(f"task={cfg.task} model={cfg.model.name} params={_count_params(net):,} device={info.device_target} "
             f"workers={info.group_size} experiment={exp_dir}")
    if state.get("validation_pending"):   # the run stopped while validating this epoch: validate it now
        _end_epoch(task, net, cfg, info, schedule, optimizer, state)

    step = TrainStep(net, task.build_loss(cfg), optimizer, train_cfg.clip_grad_norm, info.group_size,
                     network_takes_lengths=getattr(task, "network_takes_lengths", False))
    max_bad = train_cfg.max_nonfinite_steps
    for epoch in range(state["epoch"] + 1, train_cfg.epochs + 1):
        optimizer.learning_rate.set_data(ms.Tensor(schedule.lr, ms.float32))
        net.set_train(True)
        t0 = time.time()
        losses, skipped = [], 0
        batches = task.train_batches(cfg, epoch, info.group_size, info.rank)
        bar = tqdm(batches, desc=f"epoch {epoch}", disable=not info.is_main, dynamic_ncols=True, mininterval=2)
        for batch in bar:
            loss, updated = step(*(ms.Tensor(x) for x in batch))
            state["step"] += 1
            loss = float(loss.asnumpy())
            if bool(updated.asnumpy()):
                state["nonfinite_steps"] = 0
                losses.append(loss)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            else:
                skipped += 1
                state["nonfinite_steps"] += 1
                log.info(f"epoch {epoch} step {state['step']}: non-finite loss/gradient ({loss}), update skipped")
                if state["nonfinite_steps"] >= max_bad:
                    raise TrainingError(
                        f"{max_bad} non-finite losses in a row (epoch {epoch}, step {state['step']}); stopping. "
                        f"The last good checkpoint is kept: {ckpt.latest_checkpoint(exp_dir) or 'none yet'}. "
                        "Lower train.lr or check the data.")
        if not losses and skipped == 0:
            raise TrainingError("the training data gave no batch: fewer rows than train.batch_size?")

        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
                                 "skipped_steps": skipped, "lr": schedule.lr, "train_time": round(time.time() - t0, 2)})
        state["validation_pending"] = epoch % train_cfg.valid_every == 0 or epoch == train_cfg.epochs
        if state["validation_pending"] and info.is_main:   # the epoch is kept whatever validation does
            _save_epoch(cfg, net, optimizer, schedule, state, best=False)
        _end_epoch(task, net, cfg, info, schedule, optimizer, state)
    if state["best_score"] is not None:
        log.info(f"best validation score {state['best_score']:.3f} at epoch {state['best_epoch']} "
                 f"({os.path.join(ckpt.checkpoint_dir(exp_dir), 'best.ckpt')})")
    return state


def _validate(task, net, cfg, info, epoch):
    """task.validate -> its metrics, or None (logged) when validation failed on bad data."""
    net.set_train(False)
    try:
        return task.validate(net, cfg, info)
    except UserError as err:
        if info.distributed:    # the other workers wait in validation's all-reduce: stop them all
            raise TrainingError(f"epoch {epoch}: validation failed on worker {info.rank} ({err}); the epoch's "
                                "checkpoint is kept and a re-run validates it first: fix data.valid") from None
        log.info(f"epoch {epoch}: validation failed, no score for this epoch (its checkpoint is kept): {err}")
        return None


def _end_epoch(task, net, cfg, info, schedule, optimizer, state):
    """Validate the epoch in `state` when `state["validation_pending"]`, step the lr schedule,
    log and save the epoch checkpoint (again, with the validation results)."""
    epoch, record, score = state["epoch"], state["history"][-1], None
    if state["validation_pending"]:
        t1 = time.time()
        metrics = _validate(task, net, cfg, info, epoch)
        if metrics is not None:
            score = metrics["score"]
            record.update({f"valid_{k}": v for k, v in metrics.items()}, valid_time=round(time.time() - t1, 2))
            if state["best_score"] is None or score > state["best_score"]:
                state["best_score"], state["best_epoch"] = score, epoch
    schedule.step(epoch, score)
    state["validation_pending"] = False
    log.info("epoch %d: %s", epoch, ", ".join(f"{k}={_fmt(v)}" for k, v in record.items() if k != "epoch"))
    if info.is_main:
        _save_epoch(cfg, net, optimizer, schedule, state, best=state["best_epoch"] == epoch)


def _save_epoch(cfg, net, optimizer, schedule, state, best):
    exp_dir = cfg.experiment_dir
    path = os.path.join(ckpt.checkpoint_dir(exp_dir), f"epoch_{state['epoch']:04d}.ckpt")
    meta = {"state": state, "lr_schedule": schedule.state_dict(), **ckpt.config_meta(cfg)}
    ckpt.save_training_checkpoint(path, optimizer, meta, network=net)
    if best:
        ckpt.copy_atomic(path, os.path.join(ckpt.checkpoint_dir(exp_dir), "best.ckpt"))
    ckpt.prune_checkpoints(exp_dir, cfg.train.keep_checkpoints)
    tmp = os.path.join(exp_dir, "history.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"best_epoch": state["best_epoch"], "best_score": state["best_score"],
                   "history": state["history"]}, f, indent=1)
    os.replace(tmp, os.path.join(exp_dir, "history.json"))


def _count_params(net):
    return sum(int(np.prod(p.shape)) for p in net.trainable_params())


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)
