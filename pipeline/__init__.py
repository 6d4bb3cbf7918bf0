"""cxr-transfer: transfer learning on small sets of DICOM chest radiographs (library for the DVC stages)."""

__version__ = "0.1.0"
