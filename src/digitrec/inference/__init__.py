"""Inference: a trained network -> calibrated probabilities and verdicts -> records; exports."""
