"""The config schema: every key of every section with its type, default and allowed range.

`schema(task, model_name)` is the nested dict of `Key`s a config of that task and model may hold
(sections `model` and `data` depend on them, `stft` exists for enhancement only). src/config.py
checks a loaded config against it: unknown keys are refused with the closest known key
suggested, wrong types and out-of-range values are refused, and missing keys get their
default. No section takes free keys: a new model or task adds its keys here.
"""
from dataclasses import dataclass

REQUIRED = object()   # default of keys every config must set


@dataclass(frozen=True)
class Key:
    """One config key. `kind`: int | float | bool | str | floats | ints (lists); `low`/`high`:
    inclusive bounds (`high_open`: exclusive upper bound), `positive`: > 0; `choices`: allowed
    values; `null`: None allowed; `doc`: one line for readers of the schema."""
    kind: str
    default: object = REQUIRED
    low: float = None
    high: float = None
    high_open: bool = False
    positive: bool = False
    choices: tuple = None
    null: bool = False
    doc: str = ""


def _count(default=REQUIRED, doc="", low=1):
    return Key("int", default, low=low, doc=doc)


def _path(doc):
    return Key("str", None, null=True, doc=doc)


TASKS = ("separation", "enhancement", "counting")

TOP_LEVEL = {
    "task": Key("str", "separation", choices=TASKS),
    "experiment_dir": Key("str", doc="checkpoints, resolved config, log and history go here"),
    "device_target": Key("str", "auto", choices=("auto", "Ascend", "GPU", "CPU")),
    "mode": Key("str", "graph", choices=("graph", "pynative")),
    "seed": _count(0, low=0),
    "sample_rate": _count(doc="Hz, for data and model"),
    "segment": Key("float", positive=True, doc="training segment (crop) in seconds"),
}

MODELS = {
    "swave": {
        "N": _count(doc="encoder filters"), "L": _count(doc="encoder window"), "H": _count(doc="LSTM hidden size"),
        "R": _count(doc="dual-path layers"), "C": _count(doc="speakers"),
        "input_normalize": Key("bool", False),
        "input_rms": Key("float", None, positive=True, null=True,
                         doc="scale every mixture to this RMS before the network and the estimates back, so the "
                             "result does not depend on the recording's level (e.g. the training mixtures' RMS); "
                             "null = as given (svoice)"),
        "lstm": Key("str", "auto", choices=("auto", "fused", "native")),
        "recompute": Key("bool", False),
    },
    "countnet": {
        "speaker_counts": Key("ints", low=1, doc="the speaker counts it tells apart, one score each"),
        "n_fft": _count(256, low=2), "hop": _count(80, doc="<= n_fft / 2"), "n_mels": _count(40),
        "channels": _count(128, low=2, doc="width of the dilated convolutions (the first two: half)"),
        "dropout": Key("float", 0.0, low=0, high=1, high_open=True, doc="before the scoring layer, in training"),
    },
    "rtransformer": {
        "input_size": _count(doc="= stft bins"), "output_size": _count(doc="= stft bins"),
        "d_model": _count(), "h": _count(doc="attention heads"),
        "rnn_type": Key("str", "LSTM", choices=("LSTM", "GRU")),
        "ksize": _count(doc="LocalRNN window in frames"), "n": _count(doc="LocalRNN layers per block"),
        "n_level": _count(doc="blocks"),
        "dropout": Key("float", 0.0, low=0, high=1, high_open=True),
        "emb_dropout": Key("float", 0.0, low=0, high=1, high_open=True),
        "layer_norm": Key("bool", True), "causal": Key("bool", True),
    },
}

SPEED_PERTURB = Key("float", 0.0, low=0, high=0.5, doc="data.train_speech: every source played at a speed uniform in "
                                                      "1 +- speed_perturb (new voices); 0 = off")

DATA = {
    "separation": {
        "train": _path("MindRecord split for training (preprocess.py)"),
        "valid": _path("MindRecord split for validation"),
        "train_speech": _path("single-speaker utterances mixed on the fly (folder searched recursively or list "
                              "file); when set it replaces data.train"),
        "steps_per_epoch": _count(1000, doc="batches per epoch when training from data.train_speech"),
        "speaker_counts": Key("ints", None, low=1, null=True,
                              doc="data.train_speech: speakers in a mixture, drawn uniformly from this list "
                                  "(each <= model.C; the other outputs are trained to be silent); null = model.C"),
        "speed_perturb": SPEED_PERTURB,
        "dynamic_mixing": Key("bool", False, doc="new mixtures from the training sources every epoch"),
        "dm_gain_db": Key("float", 2.5, low=0, doc="dynamic mixing: source gains uniform in +-dm_gain_db"),
        "num_workers": _count(1, doc="data loading workers"),
    },
    "counting": {
        "train_speech": Key("str", doc="single-speaker utterances mixed on the fly (folder searched recursively or "
                                       "list file), model.speaker_counts speakers at a time"),
        "valid": Key("str", doc="folder holding Libri<n>Mix/valid for every n of model.speaker_counts "
                                "(python -m src.data.corpus)"),
        "steps_per_epoch": _count(500),
        "dm_gain_db": Key("float", 3.0, low=0, doc="source gains uniform in +-dm_gain_db"),
        "speed_perturb": SPEED_PERTURB,
        "mask_bands": _count(0, low=0, doc="training: zero one random run of up to this many mel bands per item "
                                          "(SpecAugment); 0 = off"),
        "mask_frames": _count(0, low=0, doc="training: zero one random run of up to this many frames per item; 0 = off"),
    },
    "enhancement": {
        **{f"{split}_{kind}": _path(f"{split} {what}: folder (searched recursively) or list file")
           for split in ("train", "valid", "test") for kind, what in (("clean", "clean speech"), ("noise", "noise"))},
        "train_snrs": Key("floats", [-5, 0], doc="dB, one drawn per training item"),
        "valid_snrs": Key("floats", [-5, 0, 5], doc="dB, every validation utterance at every SNR"),
        "test_snrs": Key("floats", [-5, 0, 5]),
        "target": Key("str", "irm", choices=("irm", "mag_ratio")),
        "resample": Key("bool", False), "downmix": Key("bool", False),
    },
}

LR_DECAY = {   # one section for every schedule type; each type reads its own keys
    "type": Key("str", "constant", choices=("constant", "step", "multistep", "plateau")),
    "step_size": _count(2, doc="step: epochs between decays"),
    "gamma": Key("float", 0.98, positive=True, doc="step: lr factor"),
    "milestones": Key("ints", None, low=1, null=True, doc="multistep: epochs where the next value starts"),
    "values": Key("floats", None, positive=True, null=True, doc="multistep: one more lr than milestones"),
    "factor": Key("float", 0.5, positive=True, high=1, doc="plateau: lr factor"),
    "patience": _count(2, doc="plateau: validations without improvement"),
    "min_lr": Key("float", 0.0, low=0, doc="plateau: lower bound"),
}

TRAIN = {
    "epochs": _count(doc="last epoch (a resumed run continues up to it)"),
    "batch_size": _count(doc="global batch (split across data-parallel workers)"),
    "lr": Key("float", positive=True),
    "weight_decay": Key("float", 0.0, low=0),
    "clip_grad_norm": Key("float", 0.0, low=0, doc="global-norm clipping; 0 = off"),
    "lr_decay": LR_DECAY,
    "valid_every": _count(1, doc="epochs between validations"),
    "valid_max_utterances": _count(0, low=0, doc="0 = all"),
    "keep_checkpoints": _count(3, doc="last N epoch checkpoints kept (plus best.ckpt)"),
    "max_nonfinite_steps": _count(20, doc="consecutive NaN/Inf steps before the run stops"),
    "init_from": _path("checkpoint whose parameters of the same name and shape start a new run"),
}

TRAIN_BY_TASK = {
    "separation": {
        "level_weight": Key("float", 0.0, low=0, doc="score of an output against a speaker: SI-SNR minus this times "
                                                     "the level error in dB (src/losses/pit_si_snr.py); 0 = svoice's loss"),
    },
    "counting": {},
    "enhancement": {
        "loss": Key("str", "mask_mse", choices=("mask_mse", "magnitude_mse")),
        "valid_pesq_stoi": Key("bool", False, doc="also PESQ and STOI in validation"),
    },
}

STFT = {
    "n_fft": _count(320, low=2), "hop": _count(160), "win": _count(320, doc="<= n_fft, hop <= win / 2"),
}

COUNTING = {
    "threshold_db": Key("float", -20.0, high=0,
                        doc="speaker counting with this model (src/inference/speaker_count.py): an output is a speaker "
                            "when its energy is at least this many dB relative to the loudest output; calibrated "
                            "per model on dev mixtures (bench/bench_count_threshold.py)"),
}

SECTIONS_BY_TASK = {   # sections only some tasks have
    "separation": {"counting": COUNTING},
    "enhancement": {"stft": STFT},
    "counting": {},
}


def schema(task, model_name):
    """Nested dict {key: Key or section dict} for a config of `task` with model `model_name`
    (both must be known: TASKS, MODELS)."""
    sections = {
        "model": {"name": Key("str", choices=tuple(MODELS)), **MODELS[model_name]},
        "data": DATA[task],
        "train": {**TRAIN, **TRAIN_BY_TASK[task]},
        **SECTIONS_BY_TASK[task],
    }
    return {**TOP_LEVEL, **sections}


def relation_problems(cfg):
    """Problems between keys of a config whose keys all passed the schema -> list of messages."""
    for key in ("speaker_counts", "speed_perturb"):
        if cfg.data.get(key) and not cfg.data.get("train_speech"):
            return [f"data.{key}: only used when training from data.train_speech, which is not set"]
    counts = cfg.data.get("speaker_counts")
    if counts and max(counts) > cfg.model.C:
        return [f"data.speaker_counts: {counts} has more speakers than the model's outputs (model.C={cfg.model.C})"]
    if cfg.model.name == "countnet" and cfg.model.hop > cfg.model.n_fft // 2:
        return [f"model.hop: {cfg.model.hop} is more than half of model.n_fft={cfg.model.n_fft} (frames would skip "
                "samples)"]
    decay = cfg.train.lr_decay
    if decay.type == "multistep" and len(decay["values"] or []) != len(decay.milestones or []) + 1:
        return ["train.lr_decay: multistep needs milestones and one more value than milestones, got "
                f"milestones={decay.milestones} values={decay['values']}"]
    return []


def all_paths():
    """Every dotted key of every task and model (for suggestions): {"train.lr", "data.train", ...}."""
    paths = set()

    def walk(node, prefix):
        for key, value in node.items():
            paths.add(prefix + key)
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

    for task in TASKS:
        for model_name in MODELS:
            walk(schema(task, model_name), "")
    return paths
