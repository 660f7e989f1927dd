"""Slice-by-slice segmentation (MoNet, U-Net, PocketNet 2D): preprocessing, localisation, CPU
runtime backends, the geometry-exact predictor with its file and folder API, and the demo."""
