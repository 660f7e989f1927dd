"""Metrics and evaluations: Dice and HD95, segmentation and held-out slice evaluation, detection
metrics (object Dice, FROC, average recall)."""
