"""Suite-wide settings: one intra-op thread, and a probe cache of the session's own.

The tests run small networks on small inputs, where thread synchronisation costs more than it
saves; with two threads on a busy 2-core machine the same tests ran 5-13× slower.
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _probe_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Memory-format probes (medseg.tuning) cache into a folder of the session, not the user's home."""
    os.environ["MEDSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("medseg-cache"))
