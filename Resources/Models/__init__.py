"""The bundled weights and their model cards, shipped as the package data `liteseg.bundled_models`
(pyproject maps this folder to it; Slicer's CMake installs it at the same place beside the engine)."""
