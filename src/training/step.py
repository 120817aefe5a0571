"""One optimisation step as a single compiled graph."""
import mindspore as ms
from mindspore import nn, ops


class TrainStep(nn.Cell):
    """forward -> loss -> gradients -> (all-reduce) -> global-norm clip -> optimizer update.

    construct(net_input, *targets) -> (loss, updated): `updated` is False when the loss or a
    gradient was NaN/Inf; the parameters and the optimizer state are then left untouched.
    With `network_takes_lengths`, the network also gets the batch's last element (the lengths,
    by convention `(net_input, *targets, lengths)`), e.g. to mask padded frames in attention.
    With `group_size` > 1 (data parallel), gradients and the loss are averaged over the workers
    before the finiteness check and clipping, so every worker takes the same decision.
    """

    def __init__(self, network, loss_fn, optimizer, clip_grad_norm=0.0, group_size=1, network_takes_lengths=False):
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.clip_grad_norm = float(clip_grad_norm or 0.0)
        self.group_size = group_size
        self.network_takes_lengths = network_takes_lengths
        if group_size > 1:
            self.grad_reducer = nn.DistributedGradReducer(self.weights, mean=True, degree=group_size)
            self.all_reduce = ops.AllReduce()
        self.grad_fn = ops.value_and_grad(self.forward, None, self.weights)

    def forward(self, net_input, *targets):
        if self.network_takes_lengths:
            return self.loss_fn(self.network(net_input, targets[-1]), *targets)
        return self.loss_fn(self.network(net_input), *targets)

    def construct(self, net_input, *targets):
        loss, grads = self.grad_fn(net_input, *targets)
        if self.group_size > 1:
            grads = self.grad_reducer(grads)
            loss = self.all_reduce(loss) / self.group_size
        finite = ops.isfinite(loss)
        for grad in grads:
            finite = ops.logical_and(finite, ops.isfinite(grad).all())
        if finite:
            if self.clip_grad_norm > 0:
                grads = ops.clip_by_global_norm(grads, self.clip_grad_norm)
            self.optimizer(grads)
        return loss, finite


def build_optimizer(network, train_cfg):
    """Adam over the trainable parameters; the lr is a Parameter the trainer sets each epoch."""
    return nn.Adam(network.trainable_params(), learning_rate=ms.Parameter(
        ms.Tensor(float(train_cfg.lr), ms.float32), name="learning_rate"),
        weight_decay=float(train_cfg.get("weight_decay", 0.0)))
