"""LiteSeg engine: fast CPU segmentation of CT and MRI with very small networks.

Importable without 3D Slicer; depends on torch, numpy and SimpleITK only.
"""

__version__ = "0.1.0"
