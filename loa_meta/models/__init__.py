"""Models: the LOA-induced network (Eqs. 11-12, Algorithm 1 unrolled) and the ISTA-Net+ baseline."""

from loa_meta.models.loa_net import LOANet, export_serving

from loa_meta.models.ista_net_plus import ISTANetPlus

__all__ = ["LOANet", "ISTANetPlus", "export_serving"]
