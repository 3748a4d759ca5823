"""The diagnostics callback measures the step's first two views in eval mode without gradient, and hands the backbone
back to training as it found it: its batch-norm statistics untouched, still in training mode. With labelled data
it also logs the tolerance."""

from types import SimpleNamespace

import torch
from torch import nn

from selfsup.evaluation import DiagnosticsCallback
from selfsup.evaluation.diagnostics import representation_diagnostics


def test_diagnostics_leave_the_backbone_training_with_its_statistics_untouched() -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    statistics = [buffer.clone() for buffer in backbone.buffers()]
    logged: dict[str, float] = {}
    module = SimpleNamespace(backbone=backbone, labelled=True)
    module.log_dict = lambda values, batch_size: logged.update(values)
    trainer = SimpleNamespace(num_training_batches=4, accumulate_grad_batches=1, global_step=0)
    views = [torch.randn(8, 3, 6, 6), torch.randn(8, 3, 6, 6)]
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    DiagnosticsCallback(every_n_steps=1).on_train_batch_end(trainer, module, None, (views, labels), 0)

    assert all(layer.training for layer in backbone.modules())
    for buffer, before in zip(backbone.buffers(), statistics, strict=True):
        assert torch.equal(buffer, before)
    with torch.no_grad():
        expected = representation_diagnostics(*(backbone.eval()(view) for view in views), labels)
    assert "tolerance" in expected
    assert logged == {f"diag/{name}": value for name, value in expected.items()}
