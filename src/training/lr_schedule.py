"""Epoch-level learning-rate schedules with state that goes into checkpoints."""


class ConstantLR:
    def __init__(self, lr):
        self.lr = float(lr)

    def step(self, epoch, score=None):
        """Called after `epoch` (1-based) with its validation score (None if not validated)."""
        return self.lr

    def state_dict(self):
        return {"lr": self.lr}

    def load_state_dict(self, state):
        self.lr = float(state["lr"])


class PlateauLR(ConstantLR):
    """svoice's `lr_sched: plateau`, which is PyTorch's `ReduceLROnPlateau` (default threshold,
    threshold_mode "rel", cooldown 0, eps 1e-8) in mode "max" on the validation score: a score is
    an improvement when it is above `best * (1 + threshold)`; otherwise it is a bad epoch, and
    when there have been more than `patience` bad epochs in a row (`bad > patience`) the lr is
    multiplied by `factor` (not below `min_lr`; changes smaller than eps are not applied) and the
    count starts again. Epochs without validation (score None) do not count."""

    threshold, eps = 1e-4, 1e-8

    def __init__(self, lr, factor=0.5, patience=2, min_lr=0.0):
        super().__init__(lr)
        self.factor, self.patience, self.min_lr = float(factor), int(patience), float(min_lr)
        self.best = None
        self.bad = 0

    def step(self, epoch, score=None):
        if score is None:
            return self.lr
        score = float(score)
        if self.best is None or score > self.best * (1.0 + self.threshold):
            self.best, self.bad = score, 0
        else:
            self.bad += 1
        if self.bad > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.bad = 0
        return self.lr

    def state_dict(self):
        return {"lr": self.lr, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state):
        self.lr, self.best, self.bad = float(state["lr"]), state["best"], int(state["bad"])


class StepLR(ConstantLR):
    """Multiply the lr by `gamma` every `step_size` epochs (svoice's default `lr_sched: step`)."""

    def __init__(self, lr, step_size, gamma):
        super().__init__(lr)
        self.base_lr, self.step_size, self.gamma = float(lr), int(step_size), float(gamma)

    def step(self, epoch, score=None):
        self.lr = self.base_lr * self.gamma ** (epoch // self.step_size)
        return self.lr


class MultiStepLR(ConstantLR):
    """Piecewise-constant: `values[k]` from epoch `milestones[k-1]` on (epochs are 1-based)."""

    def __init__(self, milestones, values):
        if len(values) != len(milestones) + 1:
            raise ValueError("train.lr_decay: multistep needs one more value than milestones")
        self.milestones, self.values = [int(m) for m in milestones], [float(v) for v in values]
        super().__init__(self.values[0])

    def step(self, epoch, score=None):
        # the lr used from epoch+1 on
        self.lr = self.values[sum(epoch + 1 >= m for m in self.milestones)]
        return self.lr


def schedule_settings(train_cfg):
    """(schedule class, its arguments): what the schedule of a `train` section that passed the schema
    (src/config_schema.py: LR_DECAY) is built from. Keys its type does not read are not in it."""
    decay = train_cfg.lr_decay
    kind = decay.type
    if kind == "constant":
        return ConstantLR, (train_cfg.lr,)
    if kind == "plateau":
        return PlateauLR, (train_cfg.lr, decay.factor, decay.patience, decay.min_lr)
    if kind == "step":
        return StepLR, (train_cfg.lr, decay.step_size, decay.gamma)
    if kind == "multistep":
        return MultiStepLR, (tuple(decay["milestones"]), tuple(decay["values"]))
    raise ValueError(f"train.lr_decay.type must be constant, step, multistep or plateau, not '{kind}'")


def build_lr_schedule(train_cfg):
    schedule_class, args = schedule_settings(train_cfg)
    return schedule_class(*args)
