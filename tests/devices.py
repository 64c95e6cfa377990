"""Skip markers for tests that need hardware this machine may not have."""

import pytest
import torch

#: skips a test on a machine without a CUDA GPU (CI's, and the first run of every user)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (none on this machine)")
