"""Algorithm 2: the stochastic mini-batch alternating direction penalty method (Eqs. 15-18).

The bilevel problem (15)/(16) is relaxed to the penalty objective of Eq. 18,

    L~(theta, omega) = L(theta, omega; B_val) + lambda/2 ||grad_theta L(theta, omega; B_tr)||^2,

whose gradient needs a gradient of a gradient through the unrolled network (which itself contains
grad r_eps). We compute it *exactly* with nested ``tf.GradientTape``s as a Hessian-vector product:
with g = grad_theta L(B_tr) (summed over all replicas),

    grad_{theta,omega} lambda/2 ||g||^2 = lambda * J_g^T g = grad_{theta,omega} lambda <g, stop_gradient(g)>,

so each replica differentiates ``L_val_r + lambda <g_r, stop_gradient(g)>`` and the per-replica
results are summed; this is exact under tf.distribute because ||g||^2 is not a sum over replicas
but J_g^T g = sum_r J_{g_r}^T g is.

:func:`run_algorithm2_iteration` is lines 4-12 of Algorithm 2 for one (B_tr, B_val) pair:
while ||grad_theta L~||^2 + ||grad_omega L~||^2 > delta (at most ``max_inner_iterations`` cycles):
K Adam steps on theta, then one Adam step on omega; then delta <- nu_delta delta,
lambda <- nu_lambda lambda. The outer ``while delta > delta_tol`` (line 3) is driven by
:mod:`loa_meta.training.loop`.
"""

from __future__ import annotations

import weakref
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from loa_meta.training.losses import batch_loss, with_loss_weights

_ZERO = tf.UnconnectedGradients.ZERO


def gradients_or_zeros(tape, target, sources) -> List[tf.Tensor]:
    """``tape.gradient`` with zeros for the sources ``target`` does not depend on (e.g. the omega of a
    model without task weights in the one first-order kernel). ``UnconnectedGradients.ZERO`` fails on
    Keras 3 variables in a graph (their ``dtype`` is a string)."""
    grads = tape.gradient(target, sources)
    return [tf.zeros(v.shape, tf.as_dtype(v.dtype)) if g is None else g for g, v in zip(grads, sources)]


def model_inputs(batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """The model call dict {"kspace", "mask", "task_id"} of a data batch (task 0 if absent)."""
    task_id = batch.get("task_id")
    if task_id is None:
        task_id = tf.zeros(tf.shape(batch["kspace"])[:1], tf.int32)
    return {"kspace": batch["kspace"], "mask": batch["mask"], "task_id": task_id}


def replica_slice(batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """This replica's contiguous share of a global batch (identity without distribution).

    Per-sample tensors (``kspace``, ``target``, ``task_id`` and a ``(B, H, W)`` mask) are split
    along the batch axis; a shared ``(H, W)`` mask is left whole.
    """
    ctx = tf.distribute.get_replica_context()
    n = ctx.num_replicas_in_sync if ctx is not None else 1
    if n == 1:
        return batch
    i = ctx.replica_id_in_sync_group
    rank_b = batch["kspace"].shape.rank

    def sl(key, t):
        if key == "mask" and t.shape.rank is not None and t.shape.rank < rank_b:
            return t
        b = tf.shape(t)[0] // n
        return t[i * b : (i + 1) * b]

    return {k: sl(k, v) for k, v in batch.items()}


def global_batch_size(batch) -> tf.Tensor:
    return tf.shape(batch["target"])[0]


def sum_sq(ts: Sequence[tf.Tensor]) -> tf.Tensor:
    """Sum of squares of all entries of a list of tensors (float32 scalar; 0 for an empty list)."""
    if not ts:
        return tf.constant(0.0, tf.float32)
    return tf.add_n([tf.cast(tf.reduce_sum(tf.square(t)), tf.float32) for t in ts])


def all_reduce(values):
    """Sum over replicas in a replica context (identity without distribution)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def split_microbatches(batch: Dict[str, tf.Tensor], microbatch_size) -> List[Dict[str, tf.Tensor]]:
    """Split a batch into contiguous micro-batches of at most ``microbatch_size`` samples.

    Per-sample tensors are sliced along axis 0; a shared ``(H, W)`` mask (rank below the k-space
    rank) is kept whole. ``microbatch_size`` ``None`` (or >= the batch size) returns ``[batch]``.
    The batch size must be static (it is in eager mode and when a ``tf.function`` is traced with
    concrete batches); an unknown batch size falls back to one micro-batch.
    """
    n = batch["kspace"].shape[0]
    if microbatch_size is None or n is None or int(microbatch_size) >= n:
        return [batch]
    m = int(microbatch_size)
    rank_b = batch["kspace"].shape.rank
    out = []
    for start in range(0, n, m):
        mb = {}
        for key, t in batch.items():
            if key == "mask" and t.shape.rank is not None and t.shape.rank < rank_b:
                mb[key] = t
            else:
                mb[key] = t[start : start + m]
        out.append(mb)
    return out


def _add_lists(acc, new):
    if acc is None:
        return list(new)
    return [a + b for a, b in zip(acc, new)]


def _num_replicas() -> int:
    ctx = tf.distribute.get_replica_context()
    return ctx.num_replicas_in_sync if ctx is not None else 1


def _replays(model) -> bool:
    return hasattr(model, "plan") and hasattr(model, "replay")


def predict_for_training(model, batch, plan=None):
    """The model's output to differentiate: plan + straight-line replay where the model offers it.

    For a :class:`~loa_meta.models.LOANet` the Algorithm 1 decisions are planned first (no gradient
    recording; or given as ``plan``), then x_T is replayed without ``tf.cond`` /
    ``tf.while_loop``, so nested tapes stay cheap. Other models are called with ``training=True``.
    """
    inputs = model_inputs(batch)
    if _replays(model):
        return model.replay(inputs, model.plan(inputs) if plan is None else plan)
    return model(inputs, training=True)


class GradientKernels:
    """The compiled gradient computations of one model structure (one stair-wise stage).

    Each kernel is one ``tf.function`` (AutoGraph off: the network's loops are meant to unroll,
    its control flow is explicit), traced once for a micro-batch shape and reused for every
    micro-batch and every step of the stage; micro-batches are looped over on the host, so the
    graph holds one copy of the network whatever the number of micro-batches.

    * ``plan(mb)``: Algorithm 1's decisions for ``mb`` (``LOANet.plan`` without ``x``; ``{}`` for a
      model without plan/replay). A kernel of its own, so that the differentiated kernels do not
      each trace (and run) the sequential Algorithm 1 again: they take the plan as an input.
    * ``loss_grads(mb, n, wrt, plan)``: Eq. 13 loss of ``mb`` and its gradient w.r.t. ``"theta"``,
      ``"omega"`` or ``"all"`` (first order; one kernel computes theta and all, a second one omega
      alone: without theta's kernel gradients it skips the filter-gradient convolutions).
    * ``penalty_hvp(mb, g_stop, lam, n, plan)``: grad_{theta,omega} lambda <grad_theta L(mb), g_stop>
      (reverse-over-reverse Hessian-vector product; summed over micro-batches it is the gradient
      of the Eq. 18 penalty lambda/2 ||g||^2 with g = stop_gradient of the full-batch gradient).
    * ``penalty_whole(b_tr, b_val, lam, n_tr, n_val)``: all of Eq. 18 for whole batches in one graph.

    ``penalty_hvp`` and ``penalty_whole`` take ``wrt="omega"`` for the outer gradient w.r.t. omega
    alone (Algorithm 2's line 10 needs nothing else): the same values for omega, in about 0.7x the
    time (docs/benchmarks_training.md), from kernels of their own, traced on first use.

    ``plan`` defaults to ``plan(mb)``.

    Args:
      model: the model (loa-meta call convention, optionally ``plan``/``replay``).
      theta, omega: the variable blocks.
      reduction: ``"sum"`` or ``"mean"`` (the loss of Eqs. 13-14).
      jit_compile: compile the kernels with XLA.
    """

    def __init__(self, model, theta, omega, reduction: str = "sum", jit_compile: bool = False):
        self._model = weakref.ref(model)  # the kernels are cached per model; no reference cycle
        self.theta, self.omega = list(theta), list(omega)
        self.reduction, self.jit_compile = reduction, bool(jit_compile)
        opts = dict(autograph=False, jit_compile=self.jit_compile)
        # one first-order kernel for every block (the omega gradients cost next to nothing once the
        # backward pass runs), so a stage traces it once instead of once per block
        self._plan = tf.function(self._make_plan, **opts)
        self._loss_grads_all = tf.function(lambda mb, n, plan: self._first_order(mb, n, plan, "all"), **opts)
        self._hvp = tf.function(self._penalty_hvp, **opts)
        self._whole = tf.function(self._penalty_whole, **opts)
        # omega alone (line 10 of Algorithm 2): no filter gradients of theta in the outer pass
        self._loss_grads_omega = tf.function(lambda mb, n, plan: self._first_order(mb, n, plan, "omega"), **opts)
        self._hvp_omega = tf.function(
            lambda mb, g_stop, lam, n, plan: self._penalty_hvp(mb, g_stop, lam, n, plan, "omega"), **opts)
        self._whole_omega = tf.function(
            lambda b_tr, b_val, lam, n_tr, n_val, p_tr, p_val: self._penalty_whole(b_tr, b_val, lam, n_tr, n_val,
                                                                                   p_tr, p_val, "omega"), **opts)

    @property
    def model(self):
        return self._model()

    def _vars(self, wrt):
        return {"theta": self.theta, "omega": self.omega, "all": self.theta + self.omega}[wrt]

    def _make_plan(self, batch):
        plan = self.model.plan(model_inputs(batch))
        return {k: v for k, v in plan.items() if k != "x"}

    def _loss(self, batch, n, plan):
        pred = predict_for_training(self.model, batch, plan=plan or None)
        return batch_loss(pred, batch, self.reduction, n)

    def _first_order(self, mb, n, plan, wrt):
        with tf.GradientTape() as tape:
            loss = self._loss(mb, n, plan)
        return loss, gradients_or_zeros(tape, loss, self._vars(wrt))

    def _penalty_hvp(self, mb, g_stop, lam, n, plan, wrt="all"):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = self._loss(mb, n, plan)
            g = inner.gradient(loss, self.theta, unconnected_gradients=_ZERO)
            ip = tf.add_n([tf.reduce_sum(a * tf.cast(b, a.dtype)) for a, b in zip(g, g_stop)])
            term = tf.cast(lam, loss.dtype) * tf.cast(ip, loss.dtype)
        return loss, g, outer.gradient(term, self._vars(wrt), unconnected_gradients=_ZERO)

    def _penalty_whole(self, b_tr, b_val, lam, n_tr, n_val, plan_tr, plan_val, wrt="all"):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                l_tr = self._loss(b_tr, n_tr, plan_tr)
            g = inner.gradient(l_tr, self.theta, unconnected_gradients=_ZERO)
            g_stop = [tf.stop_gradient(x) for x in g]
            ip = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(g, g_stop)])
            l_val = self._loss(b_val, n_val, plan_val)
            surrogate = l_val + tf.cast(lam, l_val.dtype) * tf.cast(ip, l_val.dtype)
        grads = outer.gradient(surrogate, self._vars(wrt), unconnected_gradients=_ZERO)
        return l_tr, l_val, g, grads

    def plan(self, mb):
        """Algorithm 1's decisions for ``mb`` (``{}`` when the model does not plan)."""
        return self._plan(mb) if _replays(self.model) else {}

    def loss_grads(self, mb, n, wrt: str, plan=None):
        """(loss, gradients w.r.t. ``wrt`` = "theta", "omega" or "all") of one micro-batch."""
        plan = self.plan(mb) if plan is None else plan
        if wrt == "omega":
            return self._loss_grads_omega(mb, n, plan)
        loss, grads = self._loss_grads_all(mb, n, plan)
        k = len(self.theta)
        return loss, {"theta": grads[:k], "all": grads}[wrt]

    def penalty_hvp(self, mb, g_stop, lam, n, plan=None, wrt: str = "all"):
        """(loss, g, grad lambda <g, g_stop> w.r.t. theta and omega, or omega alone) of one
        micro-batch, g = grad_theta L(mb)."""
        fn = self._hvp_omega if _check_wrt(wrt) == "omega" else self._hvp
        return fn(mb, g_stop, lam, n, self.plan(mb) if plan is None else plan)

    def penalty_whole(self, b_tr, b_val, lam, n_tr, n_val, wrt: str = "all"):
        """(L(B_tr), L(B_val), g, gradient of Eq. 18's surrogate w.r.t. theta and omega, or omega
        alone) for whole batches."""
        fn = self._whole_omega if _check_wrt(wrt) == "omega" else self._whole
        return fn(b_tr, b_val, lam, n_tr, n_val, self.plan(b_tr), self.plan(b_val))

    def tracing_count(self) -> int:
        """Traces made so far by all kernels (a stage must trace each kernel at most once per shape)."""
        fns = [self._plan, self._loss_grads_all, self._hvp, self._whole, self._loss_grads_omega, self._hvp_omega,
               self._whole_omega]
        return sum(f.experimental_get_tracing_count() for f in fns)


def _check_wrt(wrt: str) -> str:
    if wrt not in ("all", "omega"):
        raise ValueError(f"Argument `wrt` must be 'all' or 'omega', but received: {wrt!r}")
    return wrt


def gradient_kernels(model, theta, omega, reduction: str = "sum", jit_compile: bool = False) -> GradientKernels:
    """The :class:`GradientKernels` of ``model`` for these variables (cached on the model).

    The cache is keyed by the model's number of phases and the variable blocks, so a stair-wise
    stage (one more phase) builds new kernels and drops the previous stage's.
    """
    phases = int(getattr(model, "num_phases", 0) or 0)
    key = (tuple(id(v) for v in theta), tuple(id(v) for v in omega), reduction, bool(jit_compile))
    cache = _KERNELS.get(model)
    if cache is None or cache[0] != phases:
        cache = _KERNELS[model] = (phases, {})
    if key not in cache[1]:
        cache[1][key] = GradientKernels(model, theta, omega, reduction, jit_compile)
    return cache[1][key]


_KERNELS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _sum_over(results):
    """Sum tuples of (tensor or list of tensors) over micro-batches."""
    acc = None
    for r in results:
        acc = list(r) if acc is None else [
            _add_lists(a, b) if isinstance(a, (list, tuple)) else a + b for a, b in zip(acc, r)
        ]
    return acc


def accumulate_loss_gradients(model, batch, variables, reduction: str, global_n, microbatch_size=None,
                              extra_loss_fn: Optional[Callable] = None, jit_compile: bool = False,
                              compiled: bool = True):
    """Exact gradient of the Eq. 13 loss (a sum over samples) accumulated over micro-batches.

    Args:
      model: the model (loa-meta call convention).
      batch: this replica's batch.
      variables: variables to differentiate.
      reduction: ``"sum"`` or ``"mean"`` (divided by ``global_n``).
      global_n: global batch size (the divisor of ``"mean"``).
      microbatch_size: samples per micro-batch (``None``: the whole batch at once).
      extra_loss_fn: optional ``extra_loss_fn(model, mb) -> (prediction, extra)``; when given, the
        prediction comes from it and ``extra`` (a scalar already reduced like the loss) is added.
      jit_compile: compile the gradient kernel with XLA.
      compiled: use the compiled kernel (False: op by op).

    Returns:
      ``(loss, extra, grads)`` summed over micro-batches (``extra`` is 0 without ``extra_loss_fn``).

    Without ``extra_loss_fn`` and outside a multi-replica strategy each micro-batch runs through one
    compiled :class:`GradientKernels` kernel (traced once); otherwise op by op.
    """
    variables = list(variables)
    batch = with_loss_weights(batch, reduction)  # no-op unless task_norm (and the weights are not there yet)
    mbs = split_microbatches(batch, microbatch_size)
    if global_n is None:
        global_n = global_batch_size(batch)
    if compiled and extra_loss_fn is None and _num_replicas() == 1:
        wrt = _block_of(model, variables)
        if wrt is not None:
            kern = gradient_kernels(model, *_blocks(model), reduction, jit_compile)
            loss, grads = _sum_over(kern.loss_grads(mb, global_n, wrt) for mb in mbs)
            return loss, tf.constant(0.0, tf.float32), list(grads)
    loss_acc, extra_acc, grads = None, None, None
    for mb in mbs:
        with tf.GradientTape() as tape:
            if extra_loss_fn is None:
                pred = predict_for_training(model, mb)
                extra = tf.constant(0.0, tf.float32)
            else:
                pred, extra = extra_loss_fn(model, mb)
            loss = batch_loss(pred, mb, reduction, global_n)
            total = loss + tf.cast(extra, loss.dtype)
        g = tape.gradient(total, variables, unconnected_gradients=_ZERO)
        grads = _add_lists(grads, g)
        loss_acc = loss if loss_acc is None else loss_acc + loss
        extra = tf.cast(extra, tf.float32)
        extra_acc = extra if extra_acc is None else extra_acc + extra
    return loss_acc, extra_acc, grads


def _blocks(model):
    return list(getattr(model, "theta_variables", [])), list(getattr(model, "omega_variables", []))


def _block_of(model, variables) -> Optional[str]:
    """"theta", "omega" or "all" when ``variables`` is exactly that block of the model, else None."""
    theta, omega = _blocks(model)
    ids = [id(v) for v in variables]
    for name, block in (("theta", theta), ("omega", omega), ("all", theta + omega)):
        if ids == [id(v) for v in block]:
            return name
    return None


def penalty_objective_and_grads(
    model,
    batch_tr: Dict[str, tf.Tensor],
    batch_val: Dict[str, tf.Tensor],
    lam,
    reduction: str = "sum",
    theta: Sequence[tf.Variable] = None,
    omega: Sequence[tf.Variable] = None,
    microbatch_size: Optional[int] = None,
    jit_compile: bool = False,
    compiled: bool = True,
    wrt: str = "all",
):
    """Eq. 18 and its exact gradient w.r.t. theta and omega (replica context or plain eager/graph).

    Args:
      model: a model with the loa-meta call convention and ``theta_variables``/``omega_variables``.
      batch_tr, batch_val: *global* batches (dicts with kspace, mask, target, task_id); under a
        distribution strategy each replica takes its contiguous share.
      lam: the penalty weight lambda (scalar tensor or float).
      reduction: ``"sum"`` (paper) or ``"mean"`` over the global batch.
      theta, omega: variable lists (default: the model's).
      microbatch_size: ``None`` differentiates each replica's whole B_tr / B_val in one pair of
        nested tapes. An integer m splits them into micro-batches of m samples and accumulates
        exactly (L is a sum over samples, Eqs. 13-14): first g = sum_i grad_theta L(B_tr,i)
        (first order, one micro-batch at a time), then the penalty gradient
        lambda J_g^T g = sum_i grad lambda <grad_theta L(B_tr,i), stop_gradient(g)> (second order,
        one micro-batch at a time), then sum_i grad L(B_val,i). Peak memory is that of one
        second-order micro-batch; the cost is one extra first-order pass over B_tr.
      jit_compile: compile the gradient kernels with XLA.
      compiled: use the compiled kernels (False: the same computation op by op).
      wrt: ``"all"`` (theta and omega) or ``"omega"``: the gradient w.r.t. omega alone, as
        Algorithm 2's line 10 needs it (the same values; the outer pass skips theta's kernel
        gradients, about 0.7x the time); ``grads_theta`` is then ``[]``. The metrics are the same.

    Returns:
      ``(metrics, grads_theta, grads_omega)``: metrics has ``objective`` (L~), ``loss_val``
      (L(B_val)), ``loss_train`` (L(B_tr)), ``penalty`` (lambda/2 ||g||^2) and ``grad_tr_norm2``
      (||g||^2), all summed over replicas; the gradients are summed over replicas too.

    Outside a multi-replica strategy, with the model's own variable blocks, every gradient runs in
    the compiled kernels of :class:`GradientKernels` (traced once per stage); otherwise the same
    computation runs op by op.
    """
    theta = list(model.theta_variables if theta is None else theta)
    omega = list(model.omega_variables if omega is None else omega)
    outer_vars = theta + omega if _check_wrt(wrt) == "all" else omega
    n_tr, n_val = global_batch_size(batch_tr), global_batch_size(batch_val)
    # task_norm weights are normalised over the global batch, before it is split
    batch_tr, batch_val = with_loss_weights(batch_tr, reduction), with_loss_weights(batch_val, reduction)
    btr, bval = replica_slice(batch_tr), replica_slice(batch_val)
    mbs_tr = split_microbatches(btr, microbatch_size)
    mbs_val = split_microbatches(bval, microbatch_size)
    if isinstance(lam, (int, float)):
        lam = tf.constant(lam, tf.float64)  # cast to the loss dtype where used (exact for float64 models)
    kern = None
    if compiled and _num_replicas() == 1 and _block_of(model, theta) == "theta" and _block_of(model, omega) == "omega":
        kern = gradient_kernels(model, theta, omega, reduction, jit_compile)
    if kern is not None and len(mbs_tr) == 1 and len(mbs_val) == 1:
        l_tr, l_val, g_all, grads = kern.penalty_whole(btr, bval, lam, n_tr, n_val, wrt)
    elif kern is not None:
        # (1) g = grad_theta L(B_tr), (2) lambda J_g^T g, (3) grad L(B_val): one kernel each;
        # B_tr's micro-batches are planned once for (1) and (2)
        plans = [kern.plan(mb) for mb in mbs_tr]
        l_tr, g_all = _sum_over(kern.loss_grads(mb, n_tr, "theta", p) for mb, p in zip(mbs_tr, plans))
        (grads,) = _sum_over(kern.penalty_hvp(mb, g_all, lam, n_tr, p, wrt)[2:] for mb, p in zip(mbs_tr, plans))
        l_val, gv = _sum_over(kern.loss_grads(mb, n_val, wrt) for mb in mbs_val)
        grads = [a + b for a, b in zip(grads, gv)]
    elif len(mbs_tr) == 1 and len(mbs_val) == 1:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                l_tr = batch_loss(predict_for_training(model, btr), btr, reduction, n_tr)
            g = inner.gradient(l_tr, theta, unconnected_gradients=_ZERO)
            g_all = all_reduce(g)
            g_stop = [tf.stop_gradient(x) for x in g_all]
            inner_prod = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(g, g_stop)])
            l_val = batch_loss(predict_for_training(model, bval), bval, reduction, n_val)
            lam_t = tf.cast(lam, l_val.dtype)
            surrogate = l_val + lam_t * tf.cast(inner_prod, l_val.dtype)
        grads = outer.gradient(surrogate, outer_vars, unconnected_gradients=_ZERO)
    else:
        # (1) g = grad_theta L(B_tr), first order, accumulated over micro-batches.
        l_tr, _, g = accumulate_loss_gradients(model, btr, theta, reduction, n_tr, microbatch_size)
        g_all = all_reduce(g)
        g_stop = [tf.stop_gradient(x) for x in g_all]
        # (2) lambda J_g^T g, one second-order micro-batch at a time.
        grads = None
        for mb in mbs_tr:
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    l_i = batch_loss(predict_for_training(model, mb), mb, reduction, n_tr)
                g_i = inner.gradient(l_i, theta, unconnected_gradients=_ZERO)
                ip = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(g_i, g_stop)])
                term = tf.cast(lam, l_i.dtype) * tf.cast(ip, l_i.dtype)
            grads = _add_lists(grads, outer.gradient(term, outer_vars, unconnected_gradients=_ZERO))
        # (3) grad_{theta,omega} L(B_val), first order, accumulated.
        l_val, _, gv = accumulate_loss_gradients(model, bval, outer_vars, reduction, n_val, microbatch_size)
        grads = [a + b for a, b in zip(grads, gv)]
    grads = all_reduce(list(grads))
    l_val_all, l_tr_all = all_reduce([l_val, l_tr])
    g2 = sum_sq(g_all)
    penalty = 0.5 * tf.cast(lam, tf.float32) * g2
    metrics = {
        "objective": tf.cast(l_val_all, tf.float32) + penalty,
        "loss_val": tf.cast(l_val_all, tf.float32),
        "loss_train": tf.cast(l_tr_all, tf.float32),
        "penalty": penalty,
        "grad_tr_norm2": g2,
    }
    if wrt == "omega":
        return metrics, [], list(grads)
    return metrics, list(grads[: len(theta)]), list(grads[len(theta) :])


def penalty_objective_value(model, batch_tr, batch_val, lam, reduction: str = "sum") -> tf.Tensor:
    """L~ of Eq. 18 evaluated directly (single device); used by finite-difference tests."""
    theta = list(model.theta_variables)
    batch_tr, batch_val = with_loss_weights(batch_tr, reduction), with_loss_weights(batch_val, reduction)
    with tf.GradientTape() as tape:
        l_tr = batch_loss(model(model_inputs(batch_tr), training=True), batch_tr, reduction)
    g = tape.gradient(l_tr, theta, unconnected_gradients=_ZERO)
    l_val = batch_loss(model(model_inputs(batch_val), training=True), batch_val, reduction)
    return l_val + tf.cast(lam, l_val.dtype) / 2 * tf.add_n([tf.reduce_sum(tf.square(x)) for x in g])


class Algorithm2Schedule:
    """delta / lambda state of Algorithm 2 as checkpointable tf.Variables.

    Args:
      delta0, nu_delta, delta_tol, lambda0, nu_lambda: Algorithm 2 constants (Section 5.2).
      decay_every: outer iterations (batch pairs) per line-12 update: one epoch of batch pairs,
        so that line 3 ends a stage after the paper's ~100 epochs (docs/fidelity/training.md).
    """

    def __init__(self, delta0, nu_delta, delta_tol, lambda0, nu_lambda, decay_every: int = 1):
        self.delta0, self.nu_delta, self.delta_tol = float(delta0), float(nu_delta), float(delta_tol)
        self.lambda0, self.nu_lambda = float(lambda0), float(nu_lambda)
        if int(decay_every) < 1:
            raise ValueError(f"Argument `decay_every` must be a positive integer, but received: {decay_every}")
        self.decay_every = int(decay_every)
        # float64 so that 100+ multiplicative updates do not drift from the closed form.
        self.delta = tf.Variable(self.delta0, dtype=tf.float64, trainable=False, name="delta")
        self.lam = tf.Variable(self.lambda0, dtype=tf.float64, trainable=False, name="lambda")
        self.since_decay = tf.Variable(0, dtype=tf.int64, trainable=False, name="since_decay")

    def reset(self):
        self.delta.assign(self.delta0)
        self.lam.assign(self.lambda0)
        self.since_decay.assign(0)

    def done(self) -> bool:
        """Line 3: the outer loop stops when delta <= delta_tol."""
        return float(self.delta.numpy()) <= self.delta_tol

    def decay(self):
        """Called after every outer iteration; line 12 (delta <- nu_delta delta, lambda <- nu_lambda
        lambda) takes effect on every ``decay_every``-th call."""
        self.since_decay.assign_add(1)
        if int(self.since_decay.numpy()) < self.decay_every:
            return
        self.since_decay.assign(0)
        self.delta.assign(self.delta * self.nu_delta)
        self.lam.assign(self.lam * self.nu_lambda)

    def decays_to_tol(self) -> int:
        """Number of line-12 updates until delta <= delta_tol (107 for the paper's values)."""
        return int(np.ceil(np.log(self.delta_tol / self.delta0) / np.log(self.nu_delta) - 1e-12))

    def outer_iterations_to_tol(self) -> int:
        """Outer iterations (batch pairs) until delta <= delta_tol: ``decays_to_tol() * decay_every``."""
        return self.decays_to_tol() * self.decay_every


def run_algorithm2_iteration(
    compute: Callable,
    apply_theta: Callable,
    apply_omega: Callable,
    batch_tr,
    batch_val,
    schedule: Algorithm2Schedule,
    theta_steps: int,
    max_inner_iterations: int,
    on_step: Callable[[Dict[str, float], str], None],
    steps_left: Callable[[], bool] = lambda: True,
    compute_omega: Optional[Callable] = None,
) -> Dict[str, float]:
    """Lines 4-12 of Algorithm 2 for one sampled (B_tr, B_val) pair.

    Args:
      compute: ``compute(batch_tr, batch_val, lam) -> (metrics, grads_theta, grads_omega)``.
      apply_theta, apply_omega: apply a gradient list with the theta / omega Adam optimizer.
      schedule: the delta/lambda state; decayed at the end (line 12).
      theta_steps: K.
      max_inner_iterations: cap on the number of (K theta, 1 omega) cycles.
      on_step: called after each gradient evaluation with the metrics (numpy floats, including
        ``grad_norm2`` = ||grad_theta L~||^2 + ||grad_omega L~||^2) and which block was updated
        (``"theta"``, ``"omega"`` or ``"none"`` when the line-6 test stopped the inner loop). It
        raises on non-finite values *before* anything is applied.
      steps_left: returns False when the global step budget is exhausted.
      compute_omega: optional ``compute_omega(batch_tr, batch_val, lam) -> (metrics, [], grads_omega)``,
        the gradient w.r.t. omega alone; used for the line-10 step when no line-6 test needs
        the theta gradient at the same point (k > 0, i.e. K >= 1). Its metrics have no
        ``grad_theta_norm2`` / ``grad_norm2``.

    Returns:
      The metrics of the last gradient evaluation plus ``inner_cycles``.
    """
    last = {}
    cycles = 0
    while cycles < max_inner_iterations and steps_left():
        stop = False
        for k in range(theta_steps + 1):
            lam = tf.constant(schedule.lam.numpy(), tf.float32)
            omega_only = compute_omega is not None and k > 0 and k == theta_steps
            metrics, g_theta, g_omega = (compute_omega if omega_only else compute)(batch_tr, batch_val, lam)
            m = {key: float(v) for key, v in metrics.items()}
            m["grad_omega_norm2"] = float(sum_sq(g_omega))
            if not omega_only:
                m["grad_theta_norm2"] = float(sum_sq(g_theta))
                m["grad_norm2"] = m["grad_theta_norm2"] + m["grad_omega_norm2"]
            last = m
            if k == 0 and m["grad_norm2"] <= float(schedule.delta.numpy()):
                on_step(m, "none")  # line 6 test fails: leave the inner loop
                stop = True
                break
            which = "theta" if k < theta_steps else "omega"
            on_step(m, which)  # raises on NaN/Inf before the update
            (apply_theta(g_theta) if which == "theta" else apply_omega(g_omega))
            if not steps_left():
                stop = True
                break
        cycles += 1
        if stop:
            break
    schedule.decay()
    last["inner_cycles"] = float(cycles)
    return last
