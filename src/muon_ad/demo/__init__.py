"""The end-to-end demo (`muon-ad demo`, `make demo`): an application on top of the recipes and benchmarks.

settings.py sizes the stages (QUICK, FULL); stages.py runs them; report.py writes the claims table and the
report; run.py reads top to bottom through all of it.
"""

from muon_ad.demo.run import run_demo

__all__ = ["run_demo"]
