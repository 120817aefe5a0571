"""One optimisation step as two compiled graphs: gradients, then (when finite) the update."""
import mindspore as ms
from mindspore import Parameter, ParameterTuple, nn, ops


class _Gradients(nn.Cell):
    """`(net_input, *targets)` -> (loss, finite): forward, loss, gradients, the data-parallel
    all-reduce, and whether the loss and every gradient are finite. The gradients are written to
    `self.buffers` (one non-trainable Parameter per weight), which the update graph reads."""

    def __init__(self, network, loss_fn, weights, group_size, network_takes_lengths):
        super().__init__(auto_prefix=False)
        self.network = network
        self.buffers = ParameterTuple([Parameter(ops.zeros(w.shape, w.dtype), name=f"gradient.{w.name}",
                                                 requires_grad=False) for w in weights])
        self.loss_fn = loss_fn
        self.group_size = group_size
        self.network_takes_lengths = network_takes_lengths
        if group_size > 1:
            self.grad_reducer = nn.DistributedGradReducer(weights, mean=True, degree=group_size)
            self.all_reduce = ops.AllReduce()
        self.grad_fn = ops.value_and_grad(self.forward, None, weights)

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
        stored = ()
        for grad, buffer in zip(grads, self.buffers):
            finite = ops.logical_and(finite, ops.isfinite(grad).all())
            stored = stored + (ops.assign(buffer, grad),)
        return ops.depend(loss, stored), finite


class _Update(nn.Cell):
    """The stored gradients -> global-norm clip -> optimizer update (a graph without inputs)."""

    def __init__(self, optimizer, gradients, clip_grad_norm):
        super().__init__(auto_prefix=False)
        self.optimizer = optimizer
        self.gradients = gradients
        self.clip_grad_norm = clip_grad_norm

    def construct(self):
        grads = self.gradients
        if self.clip_grad_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_grad_norm)
        return self.optimizer(grads)


class TrainStep:
    """forward -> loss -> gradients -> (all-reduce) -> global-norm clip -> optimizer update.

    `step(net_input, *targets)` -> (loss, updated): `updated` is False when the loss or a
    gradient was NaN/Inf; the parameters and the optimizer state are then left untouched.
    With `network_takes_lengths`, the network also gets the batch's last element (the lengths,
    by convention `(net_input, *targets, lengths)`), e.g. to mask padded frames in attention.
    With `group_size` > 1 (data parallel), gradients and the loss are averaged over the workers
    before the finiteness check and clipping, so every worker takes the same decision.

    Two graphs, because a data-dependent `if` around the update in one graph made MindSpore 2.10's
    graph scheduler take minutes (exponential in the layers) to link SWave with `model.lstm: fused`.
    The gradients pass from one to the other in Parameters: given as inputs, MindSpore 2.10 took
    ~20 ms per tensor to take them in (1.8 s a step for SWave with R = 2, 0.05 s this way).
    """

    def __init__(self, network, loss_fn, optimizer, clip_grad_norm=0.0, group_size=1, network_takes_lengths=False):
        self.optimizer = optimizer
        self.gradients = _Gradients(network, loss_fn, optimizer.parameters, group_size, network_takes_lengths)
        self.update = _Update(optimizer, self.gradients.buffers, float(clip_grad_norm or 0.0))

    def __call__(self, net_input, *targets):
        loss, finite = self.gradients(net_input, *targets)
        if bool(finite.asnumpy()):
            self.update()
        return loss, finite


def _adam_update(lr, beta1, beta2, eps, correction1, correction2, param, moment1, moment2, grad):
    moment1 = ops.assign(moment1, beta1 * moment1 + (1.0 - beta1) * grad)
    moment2 = ops.assign(moment2, beta2 * moment2 + (1.0 - beta2) * grad * grad)
    denominator = ops.sqrt(moment2 / correction2) + eps
    return ops.assign_sub(param, (lr / correction1) * moment1 / denominator)


class Adam(nn.Optimizer):
    """Adam exactly as `torch.optim.Adam` (svoice's optimizer): eps is added to the bias-corrected
    sqrt(v). (MindSpore's nn.Adam adds it before the correction, which moves parameters with small
    gradients differently: 13 % of the movement after 10 steps of a small SWave.) Weight decay is
    added to the gradient, as in PyTorch. State: `moment1.*`, `moment2.*`, `adam_step`; `global_step`
    counts the updates as in MindSpore's optimizers."""

    def __init__(self, params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(learning_rate, params, weight_decay)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.moment1 = self._parameters.clone(prefix="moment1", init="zeros")
        self.moment2 = self._parameters.clone(prefix="moment2", init="zeros")
        self.adam_step = Parameter(ms.Tensor(0.0, ms.float32), name="adam_step", requires_grad=False)

    def construct(self, gradients):
        gradients = self.decay_weight(gradients)
        step = ops.assign_add(self.adam_step, ops.ones((), ms.float32))
        ops.assign_add(self.global_step, self.global_step_increase_tensor)
        correction1 = 1.0 - ops.pow(ms.Tensor(self.beta1, ms.float32), step)
        correction2 = 1.0 - ops.pow(ms.Tensor(self.beta2, ms.float32), step)
        update = ops.partial(_adam_update, self.get_lr(), self.beta1, self.beta2, self.eps, correction1, correction2)
        return self.hyper_map(update, self._parameters, self.moment1, self.moment2, gradients)


def build_optimizer(network, train_cfg):
    """Adam (PyTorch's) over the trainable parameters; the lr is a Parameter the trainer sets each epoch."""
    return Adam(network.trainable_params(), learning_rate=ms.Parameter(
        ms.Tensor(train_cfg.lr, ms.float32), name="learning_rate"), weight_decay=train_cfg.weight_decay)
