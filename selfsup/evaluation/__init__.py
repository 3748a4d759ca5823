"""Evaluators: kNN classification of frozen features (online monitor now; offline evaluators build on it)."""

from selfsup.evaluation.knn import knn_predict

__all__ = ["knn_predict"]
