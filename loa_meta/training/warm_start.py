"""Warm start: begin training from the weights of a saved LOA network (beyond the paper).

The paper trains every network from Xavier kernels and its initial step sizes. A run whose config
sets ``init_weights`` (a ``.keras`` file or ``pretrained:NAME``) instead starts from that model's
learned parameters, copied by role, not by file layout:

* the regulariser's kernels (real and imaginary parts of every layer) and the smoothing eps_0;
* phase t's step sizes alpha_t and tau_t from the source's phase t; a target with more phases than
  the source gives its extra phases the source's last phase values (what stair-wise
  :meth:`LOANet.add_phase` does); a target with fewer takes the first ones;
* a task weight omega_i only when the source has a task with the same canonical task spec
  (``radial:0.1`` in both); other tasks keep the configured ``initial_omega``.

The architecture must agree (kernels per convolution, layers, kernel size); otherwise
:class:`WarmStartError` says which. A resumed run restores its checkpoint and never copies again.
Conventional training (fixed kappa, no omega) can start from the same network as meta-learning
by fixing kappa at the source's sigmoid(omega) for its task: :func:`source_kappa`.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional

from absl import logging


class WarmStartError(ValueError):
    """The ``init_weights`` model is missing, unreadable or does not fit the network being trained."""


def load_source(spec: str):
    """The LOANet saved at ``spec`` (a ``.keras`` path or ``pretrained:NAME``)."""
    import keras

    from loa_meta import pretrained
    from loa_meta.models.loa_net import LOANet

    try:
        path = pretrained.resolve(spec)
    except ValueError as e:
        raise WarmStartError(f"init_weights: {e}") from None
    if not os.path.isfile(path):
        raise WarmStartError(f"init_weights: no model file {path} (expected a .keras file or pretrained:NAME).")
    import loa_meta.layers  # noqa: F401 - registers the serializable classes
    import loa_meta.models  # noqa: F401

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - any load failure names the file
        raise WarmStartError(f"init_weights: cannot load {path}: {type(e).__name__}: {e}") from None
    if not isinstance(model, LOANet):
        raise WarmStartError(f"init_weights: {path} holds a {type(model).__name__}; only an LOANet can start an "
                             "LOA network.")
    return model


def _source_task(source, task_spec) -> Optional[int]:
    """The task id of ``source`` whose recorded spec equals ``task_spec`` (canonical form), else None."""
    from loa_meta.sampling.task_spec import match_task

    if task_spec is None or not getattr(source, "use_task_weights", False):
        return None
    try:
        return match_task(source.task_specs, task_spec)
    except ValueError:  # not among the source's tasks, or the source records none
        return None


def source_kappa(source, task_spec) -> Optional[float]:
    """sigmoid(omega) of ``source``'s task with the same canonical spec as ``task_spec``, else None."""
    j = _source_task(source, task_spec)
    if j is None:
        return None
    return 1.0 / (1.0 + math.exp(-float(source.omegas[j].numpy())))


def check_compatible(target, source) -> None:
    """:class:`WarmStartError` unless both are LOANets with the same regulariser architecture."""
    from loa_meta.models.loa_net import LOANet

    if not isinstance(target, LOANet):
        raise WarmStartError(f"init_weights: the network being trained is a {type(target).__name__}; warm start "
                             "supports the LOA network only.")
    diff = [f"{k} {getattr(source, k)} (this run: {getattr(target, k)})"
            for k in ("filters", "num_layers", "kernel_size") if getattr(source, k) != getattr(target, k)]
    if diff:
        raise WarmStartError("init_weights: the model's regulariser does not fit this run's network: "
                             + ", ".join(diff) + ". Train with the same --filters (and layers, kernel size).")


def warm_start(target, source) -> Dict[str, List[str]]:
    """Copy ``source``'s learned parameters into ``target`` (both built LOANets; rules in the module
    docstring). Returns ``{"copied": [...], "kept": [...]}``, names of target variables."""
    check_compatible(target, source)
    copied, kept = [], []

    def put(dst, src):
        dst.assign(src.numpy())
        copied.append(dst.path)

    for d_layer, s_layer in zip(target.regularizer.convs, source.regularizer.convs):
        for d, s in zip(d_layer.weights, s_layer.weights):
            if tuple(d.shape) != tuple(s.shape):  # pragma: no cover - guarded by check_compatible
                raise WarmStartError(f"init_weights: {s.path} has shape {s.shape}, this run {d.shape}.")
            put(d, s)
    put(target.eps0_var, source.eps0_var)
    src_phases = source.phases
    for t, ph in enumerate(target.phases):
        sp = src_phases[min(t, len(src_phases) - 1)]
        put(ph.alpha, sp.alpha)
        put(ph.tau, sp.tau)
    if getattr(target, "use_task_weights", False):
        for w, spec in zip(target.omegas, target.task_specs):
            j = _source_task(source, spec)
            if j is None:
                kept.append(w.path)
            else:
                put(w, source.omegas[j])
    logging.info("warm start: copied %d variables from the init_weights model (%d phases, tasks %s); kept the "
                 "initial values of %s", len(copied), len(src_phases), source.task_specs, kept or "none")
    return {"copied": copied, "kept": kept}
