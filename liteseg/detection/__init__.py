"""LowRes two-stage detection of many small targets, and the 3D U-Net sliding-window baseline it
is compared with."""
