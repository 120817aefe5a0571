"""How fast a separation config learns: its training loss on one fixed batch, trained on again and
again from scratch (the trainer's own step: forward, loss, gradients, clipping, PyTorch's Adam).

    python bench/bench_fit_one_batch.py [--config configs/swave_2spk.yaml] [--steps 100]
        [--every 10] [key=value overrides ...]

The batch is the first one of epoch 1 (`train_batches` of the config: real mixtures when
`data.train_speech` is set). First it prints the level the network sees at initialisation: the
mixture's RMS (after `model.input_rms`), the encoder features' RMS and the RMS of what the features
add to the first LSTM's gate pre-activations. A model that cannot fit one batch quickly will not
fit the data quickly either; the converse need not hold (pretrained/MODEL_CARD.md, "Training at one
input level").
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mindspore as ms  # noqa: E402

from bench.harness import cpu_description  # noqa: E402
from src.config import load_config  # noqa: E402
from src.models.swave import SWave, input_gain  # noqa: E402
from src.tasks import get_task  # noqa: E402
from src.training.step import TrainStep, build_optimizer  # noqa: E402


def input_levels(net, mix):
    """(mixture RMS as the network sees it, encoder feature RMS, RMS of the features' share of the
    first LSTM's gate pre-activations) for a numpy batch `(B, T)`."""
    if net.input_rms is not None:
        mix = mix * input_gain(mix, net.input_rms)
    features = net.encoder(ms.Tensor(mix.astype(np.float32))).asnumpy()       # (B, N, frames)
    lstm = net.separator.rnn_model.rows_grnn[0].rnn
    weight = next(p for p in lstm.get_parameters() if "weight_ih" in p.name).asnumpy()   # (4H, N), forward direction
    gates = np.einsum("gn,bnt->bgt", weight, features)
    return [float(np.sqrt(np.mean(x ** 2))) for x in (mix, features, gates)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/swave_2spk.yaml")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=10, help="print the loss every this many steps")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.input_rms=4.0")
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == "graph" else ms.PYNATIVE_MODE, device_target="CPU")
    ms.set_seed(cfg.seed)
    task = get_task(cfg.task)
    net = task.build_network(cfg)
    mix, src, lengths = next(iter(task.train_batches(cfg, 1)))
    print(f"config {args.config} {' '.join(args.overrides)}; {cpu_description()}")
    if isinstance(net, SWave):
        levels = input_levels(net, mix)
        print("at initialisation: mixture RMS {:.3f}, encoder features {:.4f}, their share of the first "
              "LSTM's gate pre-activations {:.4f}".format(*levels))
    net.set_train(True)
    train_step = TrainStep(net, task.build_loss(cfg), build_optimizer(net, cfg.train), cfg.train.clip_grad_norm)
    mix, src, lengths = ms.Tensor(mix), ms.Tensor(src), ms.Tensor(lengths)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = float(train_step(mix, src, lengths)[0].asnumpy())
        if step % args.every == 0 or step == 1:
            print(f"step {step}: loss {loss:.2f}  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
