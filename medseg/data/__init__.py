"""The data layer: geometry-exact image I/O, dataset layouts and splits, MONAI transform presets,
dataset validation, demo data and dataset cards.

Submodules (imported on use, so ``import medseg.data`` stays cheap):

- :mod:`medseg.data.io`: ``read_image``, ``write_like``, ``SimpleITKReader``, ``load_transform``;
- :mod:`medseg.data.datasets`: ``discover``, ``Case``, ``DatasetInfo``, ``load_or_make_split``, ``to_monai_dicts``;
- :mod:`medseg.data.transforms`: ``build_transforms``;
- :mod:`medseg.data.cache`: ``build_dataset`` (cached in memory or on disk);
- :mod:`medseg.data.resolve`: ``resolve_data`` (find or generate a dataset, split it), ``infer_preset``;
- :mod:`medseg.data.check`: ``check_dataset``;
- :mod:`medseg.data.synthetic`: ``generate``, ``ensure_demo_data``;
- :mod:`medseg.data.prepare`: ``prepare``, ``list_cards``, ``card``.
"""

__all__ = ["cache", "check", "datasets", "io", "prepare", "resolve", "synthetic", "transforms"]
