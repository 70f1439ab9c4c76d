"""Training: recipes, the loop, checkpoints, calibration fitting, distillation, ensembles, ablation."""
