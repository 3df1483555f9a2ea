import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # optional-dependency chatter, not test output
# Hermetic defaults: the built-in teacher and student are looked for in the current folder only, never in the
# checkout or a user's MUON_AD_HOME (muon_ad.default_path); a test that needs another root sets it itself.
os.environ["MUON_AD_HOME"] = ""

import torch

# Tests use tiny models, for which one thread is fastest, and CI's 2 cores may be shared.
torch.set_num_threads(1)
