"""Answering: the predictor, evaluation and metrics, the stdin protocol, exports."""
