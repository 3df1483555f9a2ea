"""`python -m muon_ad` is `muon-ad`."""

from muon_ad.cli import main

main()
