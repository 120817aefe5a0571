"""Write the svoice checkpoints that tests/test_svoice_files.py imports, with svoice's own code.

    python tools/make_svoice_fixtures.py --svoice /path/to/svoice --out tests/data/svoice \
        --swave N=32 L=8 H=4 R=1 C=2 input_normalize=false

Needs PyTorch, omegaconf (the version whose pickles you want) and a checkout of
facebookresearch/svoice: its SWave, serialize_model, copy_state, swap_state and cal_loss are
imported from there, the config is its conf/config.yaml as a DictConfig (hydra's `args`), and
the model is built as its train.py builds it. Two short "epochs" of its training step follow
(best_state after the first), then the file is written exactly as Solver._serialize writes it.

Writes, for omegaconf major version V:
  svoice_ocV.th        {'model', 'optimizer', 'history', 'best_state', 'args'} (torch.save)
  svoice_ocV.npz       mix (time,), a piece of the debug set's first mixture; last, best
                       (C, time): svoice's eval output (model(mix)[-1]) for the two states

The committed files: torch 2.13.0 with omegaconf 1.4.1 and `--swave N=32 L=8 H=4 R=1 C=2
input_normalize=false`, with omegaconf 2.4.0 and `--swave N=32 L=8 H=4 R=1 C=3
input_normalize=true` (~600 KB in all, Adam state included).
"""
import argparse
import glob
import os
import sys
import wave

import numpy as np
import omegaconf
import torch
import yaml

SEED = 2036
MIX_SAMPLES = slice(4000, 5201)     # 1201 samples: a partial last chunk
LR = 1e-2                           # large enough that the two states differ clearly


def svoice_args(svoice, swave):
    """svoice's conf/config.yaml as the DictConfig hydra hands to train.py (no `defaults`, no
    `hydra` node, the debug dataset merged in, struct mode)."""
    with open(os.path.join(svoice, "conf", "config.yaml")) as f:
        raw = yaml.safe_load(f)
    with open(os.path.join(svoice, "conf", "dset", "debug.yaml")) as f:
        raw["dset"] = yaml.safe_load(f)     # `# @package dset`
    for key in ("defaults", "hydra"):
        del raw[key]
    raw["swave"].update(swave)
    raw["lr"] = LR
    args = omegaconf.OmegaConf.create(raw)
    omegaconf.OmegaConf.set_struct(args, True)
    return args


def read_mix(svoice):
    path = sorted(glob.glob(os.path.join(svoice, "dataset", "debug", "mix", "*.wav")))[0]
    with wave.open(path) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return (pcm[MIX_SAMPLES] / 32768).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--svoice", required=True, help="a checkout of facebookresearch/svoice")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--swave", nargs="+", required=True, metavar="KEY=VALUE",
                        help="swave sizes: N, L, H, R, C, input_normalize")
    opts = parser.parse_args()
    sys.path.insert(0, os.path.abspath(opts.svoice))
    from svoice.models.sisnr_loss import cal_loss
    from svoice.models.swave import SWave
    from svoice.utils import copy_state, serialize_model, swap_state

    swave = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in opts.swave)}
    args = svoice_args(opts.svoice, swave)
    torch.manual_seed(SEED)
    kwargs = dict(args.swave)               # as svoice's train.py
    kwargs["sr"] = args.sample_rate
    kwargs["segment"] = args.segment
    model = SWave(**kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, args.beta2))

    mixture = torch.randn(2, 4000)
    sources = torch.randn(2, args.swave.C, 4000)
    lengths = torch.tensor([4000, 3500])
    history, best_state = [], None
    for epoch in range(2):                  # Solver._run_one_epoch's step, Solver.train's bookkeeping
        model.train()
        estimates = model(mixture)
        # .clone(): cal_loss masks in place, which torch >= 1.7 refuses on an unbind view
        loss = sum((i + 1) / len(estimates) * cal_loss(sources, est.clone(), lengths)[0]
                   for i, est in enumerate(estimates)) / len(estimates)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_norm)
        optimizer.step()
        history.append({"train": loss.item(), "valid": (-1.0, -0.5)[epoch], "best": -1.0})
        if epoch == 0:
            best_state = copy_state(model.state_dict())

    package = {"model": serialize_model(model), "optimizer": optimizer.state_dict(),
               "history": history, "best_state": best_state, "args": args}
    name = os.path.join(opts.out, f"svoice_oc{omegaconf.__version__.split('.')[0]}")
    os.makedirs(opts.out, exist_ok=True)
    torch.save(package, name + ".th")

    mix = read_mix(opts.svoice)
    model.eval()
    with torch.no_grad():
        last = model(torch.from_numpy(mix)[None])[-1][0].numpy()
        with swap_state(model, best_state):
            best = model(torch.from_numpy(mix)[None])[-1][0].numpy()
    np.savez(name + ".npz", mix=mix, last=last, best=best)
    print(f"omegaconf {omegaconf.__version__}, torch {torch.__version__}: wrote {name}.th and "
          f".npz; SWave {kwargs}")


if __name__ == "__main__":
    main()
