"""Run a network (or a loaded MindIR GraphCell) as a numpy callable."""
import mindspore as ms
import numpy as np


class _AnyLength(ms.nn.Cell):
    """`net` declared with a dynamic `(batch, time)` input: one graph for every length."""

    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net
        self.set_train(False)
        self.set_inputs(ms.Tensor(shape=[None, None], dtype=ms.float32))

    def construct(self, mixture):
        return self.net(mixture)


class NetworkSeparator:
    """`separator(mixture (batch, time)) -> estimates (batch, C, time)`, numpy in and out.

    The network is put in inference mode. With `dynamic`, GRAPH_MODE compiles it once for every
    length instead of once per length. Inputs of exactly `static_length` samples (the windows of
    `separate_long`, all of one length) run in a graph compiled for that length instead: SWave
    then uses its fused CPU LSTM (`model.lstm`), about twice as fast and a quarter of the memory
    of the any-length graph (bench/bench_inference.py). Same results within float tolerance.
    """

    def __init__(self, net, dynamic=True, static_length=None):
        self.net = net
        self.any_length = net
        self.static_length = static_length
        if isinstance(net, ms.nn.Cell):
            net.set_train(False)
            if dynamic and not isinstance(net, ms.nn.GraphCell):
                self.any_length = _AnyLength(net)

    def __call__(self, mixture):
        mixture = np.ascontiguousarray(mixture, dtype=np.float32)
        fixed = self.static_length is not None and mixture.shape[-1] == self.static_length
        out = (self.net if fixed else self.any_length)(ms.Tensor(mixture))
        return out.asnumpy()
