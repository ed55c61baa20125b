"""Many classes in bounded memory: slab-wise class decisions equal the whole-volume path's."""

from __future__ import annotations

import numpy as np
import pytest
from inference_helpers import make_run, oblique_affine, write_nifti

from medseg.inference import Predictor

LABELS = {str(k): name for k, name in enumerate(["background", "a", "b", "c", "d", "e"])}


@pytest.mark.parametrize("spacing", [None, [1.5, 1.5, 2.0]])
def test_slab_labels_agree_with_the_whole_volume(tmp_path, spacing) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (24, 20, 160)).astype(np.float32)
    scan = write_nifti(tmp_path / "scan.nii.gz", image, oblique_affine(spacing=(1.0, 1.1, 1.3), angles=(0, 0, 0)))
    whole_run = make_run(tmp_path / "whole", spacing=spacing, labels=LABELS, preset="mri", patch_size=[16, 16, 8])
    budget = 3e-5  # GiB: about 32 kB of logits, a few slices of this volume
    slab_run = make_run(tmp_path / "slab", spacing=spacing, labels=LABELS, preset="mri", patch_size=[16, 16, 8],
                        inference={"max_logits_gib": budget})
    sizes: dict[str, list[int]] = {"whole": [], "slab": []}
    predictors = {"whole": Predictor(whole_run, precision="fp32"), "slab": Predictor(slab_run, precision="fp32")}
    for name, predictor in predictors.items():
        window = predictor.logits

        def recording(part, window=window, name=name):
            out = window(part)
            sizes[name].append(out.numel())
            return out

        predictor.logits = recording
    whole = predictors["whole"].predict(scan).labels
    labels = predictors["slab"].predict(scan).labels
    assert len(sizes["whole"]) == 1 and len(sizes["slab"]) > 2, sizes
    assert max(sizes["slab"]) <= 0.5 * sizes["whole"][0]  # never the whole volume's logits
    assert labels.shape == whole.shape
    np.testing.assert_array_equal(labels, whole)  # the same windows reach every voxel
