"""Evaluators: the kNN monitor and sweep, the offline linear probe, representation diagnostics, and the
`selfsup eval` command (`selfsup.evaluation.evaluate`) that runs them on a checkpoint."""

from selfsup.evaluation.diagnostics import DiagnosticsCallback, representation_diagnostics
from selfsup.evaluation.knn import knn_predict, knn_sweep
from selfsup.evaluation.linear_probe import LinearProbeConfig, train_linear_probe

__all__ = [
    "DiagnosticsCallback",
    "LinearProbeConfig",
    "knn_predict",
    "knn_sweep",
    "representation_diagnostics",
    "train_linear_probe",
]
