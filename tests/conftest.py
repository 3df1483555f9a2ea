import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # optional-dependency chatter, not test output

import torch

# Tests use tiny models, for which one thread is fastest, and CI's 2 cores may be shared.
torch.set_num_threads(1)
