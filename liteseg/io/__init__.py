"""Reading and writing what the engine works on: images (NIfTI, NRRD, MHA, DICOM series), their
geometry, DICOM SEG, model cards and the bundled weights, and where the shared data lives."""
