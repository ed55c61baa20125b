"""Suite-wide settings: one intra-op thread.

The tests run small networks on small inputs, where thread synchronisation costs more than it
saves; with two threads on a busy 2-core machine the same tests ran 5-13× slower.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
