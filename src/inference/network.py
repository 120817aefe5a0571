"""Run a network (or a loaded MindIR GraphCell) as a numpy callable."""
import mindspore as ms
import numpy as np

from src.inference.separation import SeparationError


class NetworkSeparator:
    """`separator(mixture (batch, time)) -> estimates (batch, C, time)`, numpy in and out.

    The network is put in inference mode and declared with a dynamic (batch, time) input, so
    GRAPH_MODE compiles it once for every length instead of once per length. A network with a
    `host_inference()` that returns a runner (SWave on CPU: a step at a time, in bounded memory)
    is run through it instead.
    """

    def __init__(self, net, dynamic=True):
        self.net, self.runner = net, None
        if isinstance(net, ms.nn.Cell):
            net.set_train(False)
            if dynamic and not isinstance(net, ms.nn.GraphCell):
                host_inference = getattr(net, "host_inference", None)
                self.runner = host_inference() if host_inference else None
                if self.runner is None:
                    net.set_inputs(ms.Tensor(shape=[None, None], dtype=ms.float32))

    def __call__(self, mixture):
        mixture = np.ascontiguousarray(mixture, dtype=np.float32)
        if self.runner is not None:
            return self.runner(mixture)
        return self.net(ms.Tensor(mixture)).asnumpy()


class MinLengthSeparator:
    """A separator that refuses inputs shorter than `min_samples` with a SeparationError (the
    network cannot take them, and a failed MindSpore call can leave the runtime unusable)."""

    def __init__(self, separate_fn, min_samples):
        self.separate_fn, self.min_samples = separate_fn, min_samples

    def __call__(self, mixture):
        if mixture.shape[-1] < self.min_samples:
            raise SeparationError(f"{mixture.shape[-1]} samples is shorter than the {self.min_samples} samples "
                                  "the model needs")
        return self.separate_fn(mixture)



class NetworkClassifier:
    """`classifier(features (batch, frames, n_mels) float32) -> logits (batch, classes)`, numpy in
    and out, running a network (in the mode it is in: validation runs the training network) or a
    loaded MindIR GraphCell."""

    def __init__(self, net):
        self.net = net

    def __call__(self, features):
        return self.net(ms.Tensor(np.ascontiguousarray(features, dtype=np.float32))).asnumpy()
