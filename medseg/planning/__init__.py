"""Planning a run from the dataset and the machine.

- :mod:`medseg.planning.fingerprint`: ``fingerprint(dataset) -> Fingerprint`` (spacing, shapes,
  cropped shapes, orientation, foreground intensities, modality, class fractions and object sizes),
  and ``analyse(dataset) -> Analysis`` (the fingerprint and the ``medseg data check`` report from one
  read, cached in ``<dataset>/.medseg/fingerprint.json``; ``.require_valid()`` gates training).
"""

from medseg.planning.fingerprint import Analysis, Fingerprint, analyse, fingerprint

__all__ = ["Analysis", "Fingerprint", "analyse", "fingerprint"]
