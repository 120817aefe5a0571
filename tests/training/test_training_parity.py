"""Training parity with svoice, step by step: our trainer's step (TrainStep: graph mode, fused LSTM,
multi-scale PIT SI-SNR loss, global-norm clipping, Adam) against the PyTorch reference of svoice's
solver (tests/torch_swave.py: the same model, loss and `clip_grad_norm_` + `torch.optim.Adam`),
from the same initial weights (through the svoice importer's mapping) and the same batches.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
ms = pytest.importorskip("mindspore")

from src.config import Config  # noqa: E402
from src.losses import SeparationLoss  # noqa: E402
from src.models.swave import SWave  # noqa: E402
from src.runtime.checkpoint import load_into  # noqa: E402
from src.svoice_import import convert_state  # noqa: E402
from src.training.step import TrainStep, build_optimizer  # noqa: E402
from tests.torch_swave import SWave as TorchSWave, multi_scale_loss  # noqa: E402

SIZES = dict(N=16, L=4, H=8, R=2, C=2)
SAMPLE_RATE, SEGMENT, TIME = 8000, 0.1, 800
STEPS, BATCH, LR, MAX_NORM = 10, 2, 1e-3, 1.0


def _batches():
    """STEPS batches `(mix (B,T), src (B,C,T), lengths (B,))`, one item zero-padded past its length."""
    rng = np.random.default_rng(7)
    batches = []
    for _ in range(STEPS):
        src = (0.1 * rng.standard_normal((BATCH, SIZES["C"], TIME))).astype(np.float32)
        lengths = np.array([TIME, int(rng.integers(TIME // 2, TIME))], np.int32)
        src[1, :, lengths[1]:] = 0.0
        batches.append((src.sum(axis=1), src, lengths))
    return batches


def _torch_run(model, batches):
    """svoice's solver: multi-scale loss, backward, clip_grad_norm_, Adam -> (losses, gradient norms)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999))
    model.train()
    losses, norms = [], []
    for mix, src, lengths in batches:
        loss = multi_scale_loss(model(torch.from_numpy(mix)), torch.from_numpy(src), torch.from_numpy(lengths))
        optimizer.zero_grad()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)))
        optimizer.step()
        losses.append(float(loss))
    return losses, norms


def test_ten_adam_steps_match_pytorch_reference():
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    torch.manual_seed(0)
    reference = TorchSWave(**SIZES, sr=SAMPLE_RATE, segment=SEGMENT)
    initial = {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()}

    net = SWave(**SIZES, sample_rate=SAMPLE_RATE, segment=SEGMENT, lstm="fused")
    params = convert_state(initial, net)
    load_into(net, params, "the PyTorch reference's state dict")
    net.set_train(True)
    optimizer = build_optimizer(net, Config(lr=LR, weight_decay=0.0))
    step = TrainStep(net, SeparationLoss(), optimizer, clip_grad_norm=MAX_NORM)

    batches = _batches()
    ours = []
    for mix, src, lengths in batches:
        loss, updated = step(ms.Tensor(mix), ms.Tensor(src), ms.Tensor(lengths))
        assert bool(updated.asnumpy())
        ours.append(float(loss.asnumpy()))
    theirs, norms = _torch_run(reference, batches)

    assert sum(n > MAX_NORM for n in norms) >= STEPS // 2      # clipping was active on most steps
    assert theirs[-1] < theirs[0] - 1.0                         # and the reference learned something
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    final = convert_state({k: v.detach().numpy() for k, v in reference.state_dict().items()}, net)
    moved = 0.0
    for name, value in final.items():
        mine = net.parameters_dict()[name].asnumpy()
        np.testing.assert_allclose(mine, value, rtol=0, atol=2e-5, err_msg=name)
        moved = max(moved, float(np.abs(value - params[name]).max()))
    assert moved > 5 * LR        # the parameters really moved (10 steps of lr 1e-3)
