"""The benchmarks of shared/BENCHMARKS.md; `muon-ad bench NAME` runs one (`runner.run_benchmark`)."""

# NAME → module exposing `run(quick, device) -> BenchOutput`. Only benchmarks that exist are listed.
BENCHMARKS: dict[str, str] = {
    "muon-step": "muon_ad.bench.muon_step",
    "ad-convergence": "muon_ad.bench.ad_convergence",
    "realtime": "muon_ad.bench.realtime",
    "memory": "muon_ad.bench.memory",
    "distill-convergence": "muon_ad.bench.distill_convergence",
    "teacher-quality": "muon_ad.bench.teacher_quality",
    "stylization": "muon_ad.bench.stylization",
    "t2i": "muon_ad.bench.t2i",
    "prune": "muon_ad.bench.prune",
    "comm": "muon_ad.bench.comm",
    "quant": "muon_ad.bench.quant",
}
