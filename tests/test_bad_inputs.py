"""Every bad input, on every command, is answered in one line with exit status 2, before any work.

Each case names inputs that do not exist (teacher, images, student), so a check that came after the first
load would fail on that file instead, with another message: the expected message proves the order.
The real entry point runs in-process (`muon_ad.cli.main`), as `muon-ad` does, to keep the cases fast.
"""

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from muon_ad import cli

CONFIGS = Path(__file__).parents[1] / "configs"
TEACHER = [f"{CONFIGS / 'teacher-tiny.yaml'}"]
DISTILL = [f"{CONFIGS / 'stylize-cpu.yaml'}", "train.teacher={tmp}/no-teacher", "train.out_dir={tmp}/run"]
SYNTH = ["--teacher", "{tmp}/no-teacher", "--out", "{tmp}/x.png"]
STYLIZE = ["stylize", "-c", "{tmp}/no-content.png", "-s", "{tmp}/no-style.png"]
STUDENT_STYLIZE = ["stylize", "-c", "{tmp}/style.png", "-s", "{tmp}/style.png"]
TEXTURE = ["texture", "-e", "{tmp}/no-exemplar.png"]
STREAM = ["stream", "--style", "{tmp}/no-style.png", "--student", "{tmp}/no-student"]
SAMPLE = ["sample", "-p", "red stripes"]
T2I = [f"{CONFIGS / 't2i-tiny.yaml'}", "train.teacher={tmp}/no-teacher", "train.out_dir={tmp}/run"]
HUGE = "more than this machine's"

CASES = [
    # train-teacher: YAML and command-line overrides
    (["train-teacher", "{tmp}/picture.png"], "not a YAML text file"),
    (["train-teacher", *TEACHER, "train.batch_size=0"], "train.batch_size must be a finite number ≥ 1, got 0"),
    (["train-teacher", *TEACHER, "train.checkpoint_every=0"], "train.checkpoint_every must be"),
    (["train-teacher", *TEACHER, "train.vae_steps=-5"], "train.vae_steps must be a finite number ≥ 0, got -5"),
    (["train-teacher", *TEACHER, "train.unet_steps=-1"], "train.unet_steps must be"),
    (["train-teacher", *TEACHER, "train.unet_lr=nan"], "train.unet_lr must be a finite number > 0, got nan"),
    (["train-teacher", *TEACHER, "train.vae_lr=-1e-3"], "train.vae_lr must be"),
    (["train-teacher", *TEACHER, "train.caption_dropout=1.5"], "train.caption_dropout must be a finite number in [0, 1]"),
    (["train-teacher", *TEACHER, "train.max_nonfinite_steps=0"], "train.max_nonfinite_steps must be"),
    (["train-teacher", *TEACHER, "train.out_dir=/proc/teacher"], "cannot write in /proc"),
    (["train-teacher", *TEACHER, "train.out_dir={tmp}/file/run"], "is a file, not a folder"),
    (["train-teacher", *TEACHER, "data.size=0"], "data.size must be"),
    (["train-teacher", *TEACHER, "model.image_size=50"], "model.image_size must be a multiple of 4"),
    (["train-teacher", *TEACHER, "model.unet_channels=[30, 64]"], "multiples of model.norm_num_groups"),
    (["train-teacher", *TEACHER, "model.unet_channels=[400000, 400000]"], HUGE),
    (["train-teacher", *TEACHER, "train.vae_crop=64"], "train.vae_crop (64) must be at most data.size (48)"),
    (["train-teacher"], "Missing argument 'config'"),
    # sample
    ([*SAMPLE, "--steps", "0", *SYNTH], "--steps must be a finite number in [1, 1000], got 0"),
    ([*SAMPLE, "--steps", "-3", *SYNTH], "--steps must be"),
    ([*SAMPLE, "--guidance", "nan", *SYNTH], "--guidance must be a finite number ≥ 0, got nan"),
    ([*SAMPLE, "--ad-iters", "-1", *SYNTH], "--ad-iters must be"),
    ([*SAMPLE, "--teacher", "{tmp}/t", "--out", "{tmp}/file/x.png"], "is a file, not a folder"),
    ([*SAMPLE, "--teacher", "{tmp}/t", "--out", "/proc/x.png"], "cannot write in /proc"),
    ([*SAMPLE, "--steps", "many"], "Invalid value for '--steps'"),
    ([*SAMPLE, "--teacher", "{tmp}/t", "--out", "{tmp}/samples.txt"], "unknown image extension '.txt'"),
    (["sample"], "Missing option '--prompt'"),
    # stylize
    ([*STYLIZE, "--lr", "nan", *SYNTH], "--lr must be a finite number > 0, got nan"),
    ([*STYLIZE, "--lr", "-1", *SYNTH], "--lr must be"),
    ([*STYLIZE, "--steps", "0", *SYNTH], "--steps must be"),
    ([*STYLIZE, "--content-weight", "nan", *SYNTH], "--content-weight must be"),
    ([*STYLIZE, "--optimizer", "sgd", *SYNTH], "--optimizer must be one of adam, muon"),
    ([*STYLIZE, "--size", "0", *SYNTH], "--size must be"),
    ([*STYLIZE, "--size", "100000", *SYNTH], HUGE),
    ([*STYLIZE, "--teacher", "{tmp}/t", "--out", "{tmp}/file/x.png"], "is a file, not a folder"),
    ([*STYLIZE, "--teacher", "{tmp}/t", "--out", "/proc/x.png"], "cannot write in /proc"),
    # the input files are checked before a model loads: these give readable ones, to reach the student's config
    ([*STUDENT_STYLIZE, "--student", "{tmp}/bad-student", "--out", "{tmp}/x.png"], "must be one of 'cross_attention', 'adain'"),
    ([*STUDENT_STYLIZE, "--student", "{tmp}/bad-student", "--steps", "5", "--tile"],
     "--steps, --tile: options of AD synthesis, which --student does not run"),
    ([*STUDENT_STYLIZE, "--student", "{tmp}/huge-student", "--out", "{tmp}/x.png"], HUGE),
    ([*STYLIZE, "--student", "{tmp}/bad-student", "--out", "{tmp}/x.png"], "no-content.png: unreadable image (no such file)"),
    (["stylize", "-c", "{tmp}/no-content.png"], "Missing option '--style'"),
    # texture
    ([*TEXTURE, "--lr", "-1", *SYNTH], "--lr must be a finite number > 0, got -1"),
    ([*TEXTURE, "--lr", "inf", *SYNTH], "--lr must be"),
    ([*TEXTURE, "--size", "100000", "100000", *SYNTH], HUGE),
    ([*TEXTURE, "--size", "0", "32", *SYNTH], "--size must be"),
    ([*TEXTURE, "--steps", "0", *SYNTH], "--steps must be"),
    ([*TEXTURE, "--teacher", "{tmp}/t", "--out", "/proc/x.png"], "cannot write in /proc"),
    ([*TEXTURE, "--teacher", "{tmp}/t", "--out", "{tmp}/x.jpg"], "use a .png file name"),
    # distill: YAML, overrides, and the checks that need this machine
    (["distill", *DISTILL, "train.device=cuda:99"], "train.device=cuda:99"),
    (["distill", *DISTILL, "train.device=tpu"], "train.device must be one of cpu, cuda, got 'tpu'"),
    (["distill", *DISTILL, "train.amp=fp8"], "train.amp must be one of auto, bf16, none"),
    (["distill", *DISTILL, "train.checkpoint_every=0"], "train.checkpoint_every must be"),
    (["distill", *DISTILL, "curriculum.style_alignment.lr=nan"], "curriculum.style_alignment.lr must be"),
    (["distill", *DISTILL, "curriculum.content_refinement.batch_size=0"], "curriculum.content_refinement.batch_size"),
    (["distill", *DISTILL, "student.style_injection=film"], "must be one of 'cross_attention', 'adain'"),
    (["distill", *DISTILL, "student.base_channels=20000"], HUGE),
    (["distill", *DISTILL, "validation.every=0"], "validation.every must be"),
    (["distill", *DISTILL, "data.val_pairs=0"], "data.val_pairs must be"),
    (["distill", *DISTILL, "distill.t_max=50"], "distill.t_min/t_max must satisfy 0 <= t_min < t_max, got 100, 50"),
    (["distill", *DISTILL, "train.out_dir=/proc/run"], "cannot write in /proc"),
    # distill-t2i
    (["distill-t2i", *T2I, "student.variant=huge"], "student.variant must be one of base, small, tiny, got 'huge'"),
    (["distill-t2i", *T2I, "data.source=web"], "data.source must be one of builtin, folder"),
    (["distill-t2i", *T2I, "data.source=folder"], "data.source=folder needs data.path"),
    (["distill-t2i", *T2I, "schedule.batch_size=0"], "schedule.batch_size must be"),
    (["distill-t2i", *T2I, "consistency.sample_steps=9"], "consistency.sample_steps must be a finite number in [1, 8]"),
    (["distill-t2i", *T2I, "train.out_dir=/proc/run"], "cannot write in /proc"),
    (["distill-t2i", *T2I], "no-teacher"),
    (["distill-t2i", *T2I, "train.teacher={tmp}"], "is not a diffusers SD folder: missing unet/"),
    # bench
    (["bench", "muon-step", "--device", "tpu"], "--device must be one of cpu, cuda, got 'tpu'"),
    (["bench", "muon-step", "--device", "cuda:99"], "--device=cuda:99"),
    (["bench", "muon-step", "--out", "/proc/x.json"], "cannot write in /proc"),
    # evaluate
    (["evaluate", "{tmp}/no-target", "--count", "0"], "--count must be a finite number ≥ 1, got 0"),
    (["evaluate", "{tmp}/no-target", "--size", "0"], "--size must be"),
    (["evaluate", "{tmp}/no-target", "--feature", "clip"], "--feature must be one of domain, inception"),
    (["evaluate", "{tmp}/no-target", "--out", "{tmp}/file/eval"], "is a file, not a folder"),
    (["evaluate", "{tmp}/no-target", "--real", "{tmp}"], "no-target: folder not found"),
    (["evaluate", "{tmp}", "--real", "{tmp}/no-real"], "no-real: folder not found"),
    # stream
    ([*STREAM, "--fps", "0"], "--fps must be a finite number > 0, got 0.0"),
    ([*STREAM, "--frames", "0"], "--frames must be"),
    ([*STREAM, "--size", "0"], "--size must be"),
    ([*STREAM, "--size", "1000000"], HUGE),
    ([*STREAM, "--skip-threshold", "nan"], "--skip-threshold must be"),
    ([*STREAM, "--device", "tpu"], "--device must be one of cpu, cuda"),
    ([*STREAM, "--out", "/proc/frames"], "cannot write in /proc"),
    ([*STREAM, "--out", "{tmp}/file"], "file: is a file; give a folder"),
    ([*STREAM, "--out", "{tmp}/mine"], "mine: holds files that are not an earlier output of this command"),
    ([*STREAM, "--out", "{tmp}/frame.png"], "a stream is written as a folder of frames or a video"),
    ([*STREAM, "--out", "{tmp}/mine.gif"], "mine.gif: is a folder; a video goes to a file"),
    (["stream", "--student", "{tmp}/bad-student", "--style", "{tmp}/style.png"], "must be one of 'cross_attention'"),
    (["stream", "--student", "{tmp}/bad-student", "--style", "{tmp}/no-style.png"], "no-style.png: unreadable image"),
    # export
    (["export", "{tmp}/file", "--out", "{tmp}/exported"], "not a student folder"),
    (["export", "{tmp}/bad-student", "--out", "{tmp}/exported"], "must be one of 'cross_attention'"),
    (["export", "{tmp}/file", "--precision", "int4", "--out", "{tmp}/exported"], "--precision must be one of fp32, fp16, int8"),
    (["export", "{tmp}/file", "--precision", "int8", "--calibration", "0", "--out", "{tmp}/exported"], "--calibration must be"),
    (["export", "{tmp}/file", "--calibration-method", "kl", "--out", "{tmp}/exported"], "--calibration-method must be one of"),
    (["export", "{tmp}/file", "--out", "/proc/exported"], "cannot write in /proc"),
    (["export", "{tmp}/no-student", "--out", "{tmp}/file"], "file: is a file; give a folder"),
    (["export", "{tmp}/no-student", "--out", "{tmp}/mine"], "(no export.json), and the folder would be replaced whole"),
    (["export", "{tmp}/file"], "Missing option '--out'"),
    # profile
    (["profile", "{tmp}/file"], "not an exported student folder"),
    (["profile", "{tmp}/file", "--size", "0"], "--size must be"),
    (["profile", "{tmp}/file", "--size", "9000"], "--size must be a finite number in [1, 8192], got 9000"),
    (["profile", "{tmp}/file", "--top", "0"], "--top must be"),
    (["profile", "{tmp}/file", "--repeats", "0"], "--repeats must be"),
    (["profile", "{tmp}/file", "--threads", "0"], "--threads must be"),
    (["profile"], "Missing argument 'exports'"),
    # demo
    (["demo", "--out", "/proc/report"], "cannot write in /proc"),
    (["demo", "--out", "{tmp}/file/report"], "is a file, not a folder"),
    (["demo", "--fast"], "No such option: --fast"),
    # prune
    (["prune", "{tmp}", "--keep", "0.5", "--out", "{tmp}/run/p"], "not a student folder"),
    (["prune", "{tmp}/no-student", "--keep", "0", "--out", "{tmp}/run/p"], "keep rate must be in (0, 1], got 0.0"),
    (["prune", "{tmp}/no-student", "--keep", "1.5", "--out", "{tmp}/run/p"], "keep rate must be in (0, 1], got 1.5"),
    (["prune", "{tmp}/no-student", "--keep", "0.5", "--criterion", "random", "--out", "{tmp}/run/p"],
     "--criterion must be one of entropy, magnitude"),
    (["prune", "{tmp}/no-student", "--keep", "0.5", "--finetune-steps", "-1", "--out", "{tmp}/run/p"],
     "--finetune-steps must be"),
    (["prune", "{tmp}/no-student", "--keep", "0.5", "--attention-blocks", "0", "--out", "{tmp}/run/p"],
     "--attention-blocks must be a finite number ≥ 1, got 0"),
    (["prune", "{tmp}/no-student", "--keep", "0.5", "--out", "/proc/p"], "cannot write in /proc"),
    (["prune", "{tmp}/no-student", "--keep", "0.5", "--out", "{tmp}/file"], "file: is a file; give a folder"),
    (["prune", "{tmp}/no-student", "--keep", "0.5", "--out", "{tmp}/mine"], "(no config.json), and the folder would"),
    (["prune", "{tmp}/bad-student", "--keep", "0.5", "--out", "{tmp}/run/p"], "must be one of 'cross_attention'"),
    # ui
    (["ui", "--port", "0"], "--port must be a finite number in [1, 65535], got 0"),
    (["ui", "--port", "70000"], "--port must be"),
    (["ui", "--device", "tpu"], "--device must be one of cpu, cuda"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Bad files to point at: an image given as a config, a regular file used as a folder, folders of the user's own
    files given as an output, student folders whose
    config.json has an unknown style_injection or asks for ~40 GB."""
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    (tmp / "file").write_text("a regular file")
    for mine in ("mine", "mine.gif"):  # a user's own folders: an output must never replace them
        (tmp / mine).mkdir()
        (tmp / mine / "notes.txt").write_text("the user's own file")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp / "style.png")
    for name, config in (("bad-student", {"style_injection": "film"}), ("huge-student", {"base_channels": 20000})):
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(json.dumps(config))
        (tmp / name / "model.safetensors").write_bytes(b"never read")
    return tmp


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_a_bad_input_is_one_line_and_exit_2(folder, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)  # where default outputs (runs/, eval-results/, samples.png, ...) would go
    monkeypatch.setattr(sys, "argv", ["muon-ad", *(a.replace("{tmp}", str(folder)) for a in args)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("muon-ad: error: "), err
    assert message in err, err
    assert not list(tmp_path.iterdir()) and not (folder / "run").exists()  # refused before any work
    assert all((folder / mine / "notes.txt").is_file() for mine in ("mine", "mine.gif"))


def test_the_table_covers_every_command():
    commands = {args[0] for args, _ in CASES}
    assert commands == {command.name for command in cli.app.registered_commands}


def test_the_cli_names_the_optimisers_synthesis_has():
    from muon_ad.synthesis.ad_loop import OPTIMIZERS

    assert cli.AD_OPTIMIZERS == OPTIMIZERS
