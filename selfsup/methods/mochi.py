"""MoCHi: MoCo v2 with hard negative mixing switched on.

"Hard Negative Mixing for Contrastive Learning" (Kalantidis et al., NeurIPS 2020). The paper's best
ImageNet-100 setting with a 16k queue is (N, s, s') = (1024, 1024, 128) (Table 2), i.e. mixing from the
hardest 1/16 of the queue, as many pair mixtures as hard negatives and 1/8 as many query mixtures. The
defaults keep those proportions for the 16,384-key queue used here; configs/mochi.yaml says the same.
"""

from selfsup.methods.mocov2 import MoCoV2


class MoCHi(MoCoV2):
    def __init__(self, num_hard: int = 1024, num_mixed: int = 1024, num_query_mixed: int = 128, **kwargs) -> None:
        """
        Args:
            num_hard: N, the hardest queue negatives per query that mixing draws from.
            num_mixed: s, synthetic negatives mixed from pairs of hard negatives.
            num_query_mixed: s', synthetic negatives mixed from the query and a hard negative.
        """
        super().__init__(num_hard=num_hard, num_mixed=num_mixed, num_query_mixed=num_query_mixed, **kwargs)
