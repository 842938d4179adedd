"""Benchmarks: WIDER FACE easy/medium/hard AP (official protocol)."""
from facesieve.evaluation.widerface import evaluate_detector, evaluate_predictions

__all__ = ["evaluate_detector", "evaluate_predictions"]
