import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # optional-dependency chatter, not test output
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")  # its torchao-quantizer warning when torchao is installed

import torch

# Tests use tiny models, for which one thread is fastest, and CI's 2 cores may be shared.
torch.set_num_threads(1)
