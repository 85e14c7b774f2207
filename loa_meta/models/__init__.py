"""Models: the LOA-induced network (Eqs. 11-12, Algorithm 1 unrolled) and the ISTA-Net+ baseline."""

try:  # written concurrently; the guard goes once loa_net.py exists
    from loa_meta.models.loa_net import LOANet
except ImportError:  # pragma: no cover
    pass

try:  # ISTA-Net+ is written by another engineer; remove the guard once the file exists
    from loa_meta.models.ista_net_plus import ISTANetPlus
except ImportError:  # pragma: no cover
    pass

__all__ = ["LOANet", "ISTANetPlus"]
