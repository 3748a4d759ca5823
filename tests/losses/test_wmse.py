"""W-MSE (Ermolov et al., ICML 2021, Sec. 3) against the paper's equations written out in float64: the whitening
matrix W = L^{-1} of the Cholesky factor of each sub-batch's covariance (W Sigma W^T = I), the MSE of the normalised
whitened positives over every pair of views, averaged over the sub-batch splits; its exact values (identical views
give 0, opposite views 4); the option checks; and 2 gloo ranks, each whitening its own batch, against one process
whitening the same sub-batches."""

from itertools import combinations

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from selfsup.errors import ConfigurationError, OptionsError
from selfsup.losses import whiten, wmse_loss, wmse_terms
from selfsup.losses.wmse import sub_batch_orders
from selfsup.methods import WMSE
from tests.conftest import outcomes_of_ranks
from tests.losses.checks import average_gradients_as_ddp_does


def reference_whitening_matrix(v: Tensor, eps: float) -> Tensor:
    """W of Whitening(v) = W (v - mu): W^T W = Sigma^{-1}, from the Cholesky factor L L^T = Sigma of the unbiased
    covariance (shrunk by eps as the official code), W = L^{-1} by explicit inversion."""
    centered = v - v.mean(0)
    sigma = centered.T @ centered / (v.shape[0] - 1)
    sigma = (1 - eps) * sigma + eps * torch.eye(v.shape[1], dtype=v.dtype)
    return torch.linalg.inv(torch.linalg.cholesky(sigma))


def reference_wmse(views: list[Tensor], w_size: int, orders: Tensor, eps: float = 0.0) -> Tensor:
    """The loss of Sec. 3 in float64, one sub-batch and one view at a time: z = W (v - mu) per sub-batch, then
    2 / (N d (d - 1)) x the sum over the positive pairs of || z_i / |z_i| - z_j / |z_j| ||^2, averaged over the
    splits."""
    views = [view.double() for view in views]
    n, d = views[0].shape[0], len(views)
    total = 0.0
    for order in orders:
        whitened = [torch.empty_like(view) for view in views]
        for sub_batch in order.view(-1, w_size):
            for view, out in zip(views, whitened, strict=True):
                v = view[sub_batch]
                out[sub_batch] = (v - v.mean(0)) @ reference_whitening_matrix(v, eps).T
        unit = [z / z.norm(dim=1, keepdim=True) for z in whitened]
        distances = sum((unit[i] - unit[j]).square().sum() for i, j in combinations(range(d), 2))
        total = total + 2 / (n * d * (d - 1)) * distances
    return total / len(orders)


def correlated(rows: int, dim: int, seed: int) -> Tensor:
    """Rows with a mean far from 0 and strongly correlated dimensions."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator) + 2 * torch.eye(dim)
    return torch.randn(rows, dim, generator=generator) @ mixing + 3


@pytest.mark.parametrize(("num_views", "w_iter", "eps"), [(2, 1, 0.0), (4, 2, 0.0), (3, 2, 0.1)])
def test_value_and_gradients_match_the_papers_equations(num_views: int, w_iter: int, eps: float) -> None:
    base = correlated(12, 3, seed=0)
    views = [(base + 0.5 * correlated(12, 3, seed=1 + k)).requires_grad_() for k in range(num_views)]
    orders = sub_batch_orders(12, w_iter, torch.Generator().manual_seed(0))
    loss = wmse_terms(views, 6, orders, eps).loss
    expected = reference_wmse(views, 6, orders, eps)
    torch.testing.assert_close(loss, expected.float())
    gradients = torch.autograd.grad(loss, views)
    for gradient, expected_gradient in zip(gradients, torch.autograd.grad(expected, views), strict=True):
        torch.testing.assert_close(gradient, expected_gradient.float(), rtol=1e-3, atol=1e-5)


def test_whitened_embeddings_have_identity_covariance() -> None:
    """Per sub-batch (the leading dimensions batch them): mean 0, unbiased covariance I, and W Sigma W^T = I for the
    reference's W, which `whiten` applies without forming it."""
    x = correlated(40, 5, seed=0).double().reshape(2, 20, 5)
    whitened = whiten(x)
    identity = torch.eye(5, dtype=torch.float64)
    for sub_batch, out in zip(x, whitened, strict=True):
        torch.testing.assert_close(out.mean(0), torch.zeros(5, dtype=torch.float64))
        torch.testing.assert_close(out.T @ out / 19, identity)
        w = reference_whitening_matrix(sub_batch, 0.0)
        centered = sub_batch - sub_batch.mean(0)
        torch.testing.assert_close(w @ (centered.T @ centered / 19) @ w.T, identity)
        torch.testing.assert_close(out, centered @ w.T)


def test_identical_views_give_zero_and_opposite_views_four() -> None:
    """Whitening is linear, so a view and its negative whiten to z and -z: each pair's distance is |2 z/|z||^2 = 4.
    The reported round-off of the whitening is float32's."""
    z = correlated(16, 4, seed=0)
    orders = sub_batch_orders(16, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(wmse_terms([z, z.clone()], 8, orders).loss, torch.tensor(0.0), atol=1e-5, rtol=0)
    terms = wmse_terms([z, -z], 8, orders)
    torch.testing.assert_close(terms.loss, torch.tensor(4.0))
    assert 0 <= terms.whitening_error < 1e-4


def test_the_sub_batch_splits_are_reproducible_from_a_generator_and_change_the_loss() -> None:
    views = [correlated(16, 3, seed=0), correlated(16, 3, seed=1)]
    first, again = (wmse_loss(views, 8, 2, generator=torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(first, again)
    assert wmse_loss(views, 8, 2, generator=torch.Generator().manual_seed(6)) != first
    torch.manual_seed(5)  # no generator: torch's global random state, which checkpoints record
    expected = sub_batch_orders(16, 2, torch.Generator().manual_seed(5))
    torch.manual_seed(5)
    assert torch.equal(sub_batch_orders(16, 2), expected)


@pytest.mark.parametrize(
    ("views", "w_size", "message"),
    [
        ([torch.randn(8, 4)], 8, "needs 2 or more"),
        ([torch.randn(8, 4), torch.randn(8, 4)], 4, "w_size=4 must exceed the embedding dimension 4"),
        ([torch.randn(12, 4), torch.randn(12, 4)], 8, "batch of 12 is not a multiple"),
        ([torch.randn(4, 2), torch.randn(4, 2)], 8, "batch of 4 is not a multiple"),
    ],
)
def test_the_loss_refuses_what_it_cannot_whiten_in_one_line(views: list[Tensor], w_size: int, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        wmse_loss(views, w_size)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(w_size=64), "w_size must exceed projector_output_dim (64), got 64"),
        (dict(w_size=16, projector_output_dim=32), "w_size must exceed projector_output_dim (32), got 16"),
        (dict(w_iter=0), "w_iter must be at least 1, got 0"),
        (dict(w_eps=1.0), "w_eps must be below 1, got 1.0"),
        (dict(w_eps=-0.1), "w_eps must be at least 0, got -0.1"),
        (dict(batch_size=192), "per-device batch must be a multiple of w_size; got 192"),
        (dict(batch_size=64), "per-device batch must be a multiple of w_size; got 64"),
    ],
)
def test_the_method_refuses_options_it_cannot_whiten_with_in_one_line(options: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        WMSE(backbone="selfsup_test_tiny", small_image_stem=False, image_size=16, **options)
    assert message in str(error.value) and "\n" not in str(error.value)
    if isinstance(error.value, OptionsError):  # the command line names the flag
        assert "--model.init_args." in error.value.with_flags()


def test_a_batch_size_taken_from_the_data_is_checked_before_training() -> None:
    """A plain Trainer on a loader of 12 images per batch: `setup` takes the batch size from the data, and refuses
    it for sub-batches of 8 before the first step."""
    images = torch.randint(0, 256, (24, 1, 20, 20), dtype=torch.uint8)
    method = WMSE(backbone="selfsup_test_tiny", small_image_stem=False, image_size=16, num_classes=3, w_size=8,
                  projector_output_dim=4)  # fmt: skip
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    loader = DataLoader(TensorDataset(images, torch.arange(24) % 3), batch_size=12)
    with pytest.raises(ConfigurationError, match="per-device batch must be a multiple of w_size; got 12"):
        trainer.fit(method, loader)


# Under DDP: each of 2 gloo ranks whitens its own half of the batch, with its own draw of sub-batches; one process
# whitening the same sub-batches of the whole batch computes the mean of the ranks' losses and DDP's gradients.
WORLD_SIZE, GLOBAL_BATCH, INPUT_DIM, EMBEDDING_DIM, NUM_VIEWS, W_SIZE, W_ITER = 2, 16, 6, 3, 3, 4, 2
LOCAL_BATCH = GLOBAL_BATCH // WORLD_SIZE


def global_views() -> list[Tensor]:
    """The inputs of every view, (GLOBAL_BATCH, INPUT_DIM) each; rank r holds rows r * LOCAL_BATCH onwards."""
    base = correlated(GLOBAL_BATCH, INPUT_DIM, seed=0)
    return [base + 0.5 * correlated(GLOBAL_BATCH, INPUT_DIM, seed=1 + k) for k in range(NUM_VIEWS)]


def rank_orders(process_rank: int) -> Tensor:
    """The sub-batches rank `process_rank` draws, from a generator of its own."""
    return sub_batch_orders(LOCAL_BATCH, W_ITER, torch.Generator().manual_seed(100 + process_rank))


def projector() -> nn.Linear:
    torch.manual_seed(1)  # the same weights in every process
    return nn.Linear(INPUT_DIM, EMBEDDING_DIM)


def _ddp_worker(process_rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=process_rank, world_size=WORLD_SIZE)
    local = slice(process_rank * LOCAL_BATCH, (process_rank + 1) * LOCAL_BATCH)
    inputs = [x[local].clone().requires_grad_() for x in global_views()]
    model = projector()
    loss = wmse_terms([model(x) for x in inputs], W_SIZE, rank_orders(process_rank)).loss
    loss.backward()
    average_gradients_as_ddp_does(model)
    outcome = {
        "loss": loss.item(),
        "inputs": [x.grad.tolist() for x in inputs],
        "parameters": [p.grad.tolist() for p in model.parameters()],
    }
    results.put((process_rank, outcome))  # plain data outlives the process
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    """What each rank computed, in rank order."""
    return outcomes_of_ranks(_ddp_worker, WORLD_SIZE)


def one_process() -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """(loss, input gradients, parameter gradients) of one process on the whole batch, whitening each rank's
    sub-batches: rank r's draws shifted to its rows."""
    inputs = [x.requires_grad_() for x in global_views()]
    model = projector()
    orders = torch.cat([rank_orders(r) + r * LOCAL_BATCH for r in range(WORLD_SIZE)], dim=1)
    loss = wmse_terms([model(x) for x in inputs], W_SIZE, orders).loss
    loss.backward()
    return loss.detach(), [x.grad for x in inputs], [p.grad for p in model.parameters()]


def close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)


def test_two_ranks_whitening_their_own_batches_equal_one_process_whitening_the_same_sub_batches(
    ranks: list[dict],
) -> None:
    """The loss: the ranks' mean (each rank's own differs). The parameters: DDP's mean of the ranks' gradients on
    every rank. The inputs: each rank's gradient over the world size, put together in rank order."""
    loss, input_gradients, parameter_gradients = one_process()
    per_rank = torch.tensor([outcome["loss"] for outcome in ranks])
    close(per_rank.mean(), loss)
    assert per_rank[0] != per_rank[1]
    for outcome in ranks:
        for gradient, expected in zip(outcome["parameters"], parameter_gradients, strict=True):
            close(torch.tensor(gradient), expected)
    for view, expected in enumerate(input_gradients):
        shares = torch.cat([torch.tensor(outcome["inputs"][view]) / WORLD_SIZE for outcome in ranks])
        close(shares, expected)


def test_a_singular_sub_batch_is_one_line_naming_w_eps() -> None:
    """Collapsed embeddings (here every row alike) have a singular covariance; Cholesky's multi-line error stopped
    training without saying what to change."""
    collapsed = torch.ones(8, 4) + 1e-9 * torch.arange(4.0)
    with pytest.raises(ConfigurationError, match="cannot whiten a sub-batch.*--model.init_args.w_eps") as error:
        whiten(collapsed)
    assert "\n" not in str(error.value)
    assert torch.isfinite(whiten(collapsed, eps=1e-4)).all()
