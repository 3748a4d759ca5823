"""MoCHi: MoCo v2 with hard negative mixing switched on.

"Hard Negative Mixing for Contrastive Learning" (Kalantidis et al., NeurIPS 2020). The paper's best
ImageNet-100 setting with a 16k queue is (N, s, s') = (1024, 1024, 128) (Table 2), i.e. mixing from the
hardest 1/16 of the queue, as many pair mixtures as hard negatives and 1/8 as many query mixtures. The
default keeps those proportions for the 16,384-key queue used here; the settings themselves are documented
once, in `selfsup.models.hard_negative_mixing.HardNegativeMixing`.
"""

from selfsup.methods.mocov2 import MoCoV2
from selfsup.models.hard_negative_mixing import HardNegativeMixing


class MoCHi(MoCoV2):
    """MoCHi: MoCo v2 with hard negative mixing on, (N, s, s') = (1024, 1024, 128) by default ("Hard Negative
    Mixing for Contrastive Learning", Kalantidis et al., NeurIPS 2020, Sec. 4 and Table 2).

    Takes every `MoCoV2` option; `mixing` sets N, s, s' and the first epoch with mixing. Logs, besides MoCo's
    metrics, `train/synthetic_negative_sim` and `train/synthetic_harder_fraction`."""

    def __init__(self, mixing: HardNegativeMixing = HardNegativeMixing(1024, 1024, 128), **kwargs) -> None:
        """
        Args:
            mixing: MoCHi's (N, s, s') and start epoch.
        """
        super().__init__(mixing=mixing, **kwargs)
