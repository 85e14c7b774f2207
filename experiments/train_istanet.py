r"""ISTA-Net+ baseline (paper Section 5.3, Table 1): same data and budget as conventional training.

Example::

  python -m experiments.train_istanet --data_dir=data/demo_t1 --task=radial:0.2 \
    --workdir=runs/ista_radial_0.20 --preset=cpu

Same flags as :mod:`experiments.train_conventional`; ISTA-Net+ uses the same phase count, kernel
count (4) and kernel size (3x3) as LOANet, and is trained with all phases at once (no stair-wise).
"""

from __future__ import annotations

from absl import flags

from experiments import cli, train_conventional as _conv

_conv.MODEL_TYPE = "ista_net_plus"
_conv.APP = "train_istanet"
main = _conv.main

if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir", "workdir", "task"])
    cli.run(main)
