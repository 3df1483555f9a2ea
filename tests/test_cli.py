"""The command line as a user meets it: help lists the commands, mistakes are one line with exit status 2."""

import subprocess
import sys


def muon_ad(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "muon_ad", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_commands():
    result = muon_ad("--help")
    assert result.returncode == 0
    for command in ("train-teacher", "sample", "bench"):
        assert command in result.stdout


def test_user_mistakes_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  vae_stpes: 3\n")
    for args, message in [
        (("train-teacher", str(tmp_path / "absent.yaml")), "config file not found"),
        (("train-teacher", str(bad)), "unknown key 'train.vae_stpes'"),
        (("sample", "-p", "red stripes", "--teacher", str(tmp_path / "none")), "teacher folder not found"),
        (("bench", "no-such-bench"), "unknown benchmark 'no-such-bench'"),
    ]:
        result = muon_ad(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [f"muon-ad: error: {result.stderr.split('error: ', 1)[1].strip()}"]
        assert message in result.stderr and "Traceback" not in result.stderr
