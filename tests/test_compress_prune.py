"""Pruning: masks that equal removal, physical compaction, saving without pickle, the runtime path."""

import copy
import json

import pytest
import torch
from safetensors import safe_open

from muon_ad.compress import compact, load_pruned, plan_masks, plan_pruning, prune_student, save_pruned
from muon_ad.compress.prune import block_importance, importance_for, transformer_blocks
from muon_ad.errors import UserError
from muon_ad.eval.profile import count_flops
from muon_ad.models.student import Student, StudentConfig
from muon_ad.runtime.backends import encode_style, load_backend, run_student

CFG = StudentConfig(base_channels=16, stem_stride=2, heads=2, style_channels=(8, 16), style_dim=16, style_grid=2,
                    style_size=16, norm_groups=4)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    s = Student(CFG).eval()
    torch.nn.init.normal_(s.output_layer.weight, std=0.05)  # an untrained head is zero: the output would not see pruning
    return s


def batches(n=2):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(2, 3, 24, 24, generator=g) * 2 - 1, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1)
            for _ in range(n)]


@pytest.mark.parametrize("criterion", ["entropy", "magnitude"])
def test_compacted_student_equals_the_masked_one_and_is_smaller(student, criterion):
    plan = plan_pruning(student, 0.5, criterion, importance_for(student, criterion, batches()))
    masked = copy.deepcopy(student)
    plan_masks(student, plan).apply(masked)
    small = compact(student, plan)
    content, style = batches(1)[0]
    with torch.no_grad():
        want, got, full = masked(content, style), small(content, style), student(content, style)
    assert (want - got).abs().max() <= 1e-5
    assert (full - got).abs().max() > 1e-3  # the masks did remove something the output depended on
    params = lambda m: sum(p.numel() for p in m.parameters())
    assert params(small) < 0.4 * params(student)
    assert count_flops(small, content, style) < 0.4 * count_flops(student, content, style)
    heads = [w["heads"] for name, w in small.widths.items() if "heads" in w]
    assert heads and all(h == 1 for h in heads)  # 2 heads per layer, half kept
    gn = [w["channels"] for name, w in small.widths.items() if name.endswith("norm2")]
    assert all(c % CFG.norm_groups == 0 and c < 64 for c in gn), gn  # GroupNorm groups kept whole, every level cut


def test_style_scale_and_shift_halves_are_cut_in_whole_groups_at_any_keep_rate(student):
    # The statistics student's time_emb_proj makes scale|shift for one GroupNorm: each half must lose whole groups.
    for keep in (0.7, 0.4):
        small = compact(student, plan_pruning(student, keep, "magnitude", importance_for(student, "magnitude", batches())))
        gn = [w["channels"] for name, w in small.widths.items() if name.endswith("norm2")]
        assert gn and all(c % CFG.norm_groups == 0 for c in gn), (keep, gn)
        content, style = batches(1)[0]
        with torch.no_grad():
            assert torch.isfinite(small(content, style)).all()


def test_criteria_rank_differently_at_equal_widths(student):
    plans = {c: plan_pruning(student, 0.5, c, importance_for(student, c, batches())) for c in ("entropy", "magnitude")}
    widths = {c: compact(student, p).widths for c, p in plans.items()}
    assert widths["entropy"] == widths["magnitude"]  # same FLOPs by construction
    assert plans["entropy"] != plans["magnitude"]


def test_saved_compacted_student_loads_without_pickle_and_runs_at_odd_sizes(student, tmp_path):
    small = prune_student(student, 0.5, batches(), "entropy")
    folder = save_pruned(small, tmp_path / "pruned")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["checksums.json", "config.json", "model.safetensors", "widths.json"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:  # plain tensors, the compacted shapes
        assert f.get_tensor("stem.1.weight").shape[0] == small.stem[1].out_channels < CFG.base_channels
    loaded = load_pruned(folder)
    content, style = batches(1)[0]
    with torch.no_grad():
        assert torch.equal(loaded(content, style), small(content, style))
    backend = load_backend(folder)  # what stylize --student, stream and the benchmarks use
    code = encode_style(backend, style[:1])
    odd = torch.rand(1, 3, 37, 29) * 2 - 1
    out = run_student(backend, odd, code)
    assert out.shape == (1, 3, 37, 29) and torch.isfinite(out).all()
    with torch.no_grad():
        assert torch.allclose(out, small(odd, style[:1]).clamp(-1, 1), atol=1e-5)


@pytest.mark.parametrize("criterion", ["entropy", "magnitude"])
def test_attention_blocks_keeps_the_most_important_transformers_and_saves_their_absence(student, criterion, tmp_path):
    assert transformer_blocks(student) == ["down.2", "mid", "up.0"]
    importance = block_importance(student, criterion, importance_for(student, criterion, batches()))
    small = prune_student(student, 0.5, batches(), criterion, attention_blocks=1)
    assert transformer_blocks(small) == [max(importance, key=importance.get)]
    assert transformer_blocks(student) == ["down.2", "mid", "up.0"]  # the input student is left whole
    channels_only = prune_student(student, 0.5, batches(), criterion)
    params = lambda m: sum(p.numel() for p in m.parameters())
    dropped = [channels_only.get_submodule(name).transformer for name in transformer_blocks(channels_only)
               if name not in transformer_blocks(small)]
    assert params(small) == params(channels_only) - sum(params(t) for t in dropped) < 0.9 * params(channels_only)
    folder = save_pruned(small, tmp_path / criterion)
    loaded = load_pruned(folder)
    assert transformer_blocks(loaded) == transformer_blocks(small)
    content, style = batches(1)[0]
    with torch.no_grad():
        assert torch.equal(loaded(content, style), small(content, style))


def test_the_entropy_criterion_drops_a_transformer_that_changes_nothing_first(student):
    idle = copy.deepcopy(student)
    for p in idle.mid.transformer.proj_out.parameters():  # its residual update is zero: removing it is free
        torch.nn.init.zeros_(p)
    importance = block_importance(idle, "entropy", importance_for(idle, "entropy", batches()))
    assert importance["mid"] == 0.0 < min(importance["down.2"], importance["up.0"])
    assert "mid" not in transformer_blocks(prune_student(idle, 1.0, batches(), "entropy", attention_blocks=2))


def test_bad_keep_rates_and_tampered_widths_are_one_line_errors(student, tmp_path):
    for keep in (0.0, 1.5, -0.2):
        with pytest.raises(UserError, match="keep rate"):
            prune_student(student, keep, batches(), "magnitude")
    with pytest.raises(UserError, match="criterion"):
        prune_student(student, 0.5, batches(), "random")
    for blocks in (0, 4):
        with pytest.raises(UserError, match=rf"--attention-blocks must be in 1\.\.3 .*got {blocks}"):
            prune_student(student, 0.5, batches(), "entropy", attention_blocks=blocks)
    folder = save_pruned(prune_student(student, 0.5, None, "magnitude"), tmp_path / "p")
    (folder / "widths.json").write_text("{}")
    with pytest.raises(UserError, match="corrupt"):
        load_pruned(folder)


def test_prune_command_writes_a_compacted_student_the_runtime_loads(student, tmp_path, monkeypatch, capsys):
    from muon_ad import cli
    from muon_ad.models.student import save_student

    source = save_student(student, tmp_path / "run" / "student")
    monkeypatch.setattr("sys.argv", ["muon-ad", "prune", str(source), "--keep", "0.6", "--finetune-steps", "0",
                                     "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0 and "pruned student:" in capsys.readouterr().out
    small = load_backend(tmp_path / "p")
    assert small.student.widths is not None
    assert small.student.stem[1].out_channels < CFG.base_channels
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "run"]  # no fine-tune run folder with 0 steps


def test_the_prune_command_fine_tunes_the_edge_paths_steps_unless_told_otherwise(tmp_path, monkeypatch, capsys):
    from muon_ad import cli
    from muon_ad.compress.prune import EDGE_FINETUNE_STEPS

    asked = []

    def recipe(student, keep, out, criterion, finetune_steps, *rest):  # the recipe's signature, recording the steps
        asked.append(finetune_steps)
        return tmp_path

    monkeypatch.setattr("muon_ad.recipes.compress.prune", recipe)
    for extra, steps in (([], EDGE_FINETUNE_STEPS), (["--finetune-steps", "0"], 0), (["--finetune-steps", "7"], 7)):
        monkeypatch.setattr("sys.argv", ["muon-ad", "prune", "s", "--keep", "0.5", "--out", "p", *extra])
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        assert exit_.value.code == 0 and asked[-1] == steps
    monkeypatch.setattr("sys.argv", ["muon-ad", "prune", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    help_text = " ".join(capsys.readouterr().out.replace("│", " ").split())  # rich's panel, unwrapped
    assert f"the edge path's {EDGE_FINETUNE_STEPS}" in help_text  # the help says what the default is


def test_a_fine_tune_without_its_teacher_is_refused_before_any_pruning(student, tmp_path):
    from muon_ad.models.student import save_student
    from muon_ad.recipes.compress import prune

    source = save_student(student, tmp_path / "run" / "student")
    (tmp_path / "run" / "config.yaml").write_text(f"train:\n  teacher: {tmp_path / 'gone'}\n")
    with pytest.raises(UserError, match=r"teacher folder not found: .*gone; .*--finetune-steps 0 prunes without it"):
        prune(source, 0.5, tmp_path / "p", finetune_steps=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no pruned student, no fine-tune folder


def test_a_rerun_with_another_pruning_never_resumes_the_earlier_fine_tune(student, tmp_path):
    from muon_ad.models.student import save_student
    from muon_ad.recipes.compress import PRUNING, check_finetune_folder, prune

    source = save_student(student, tmp_path / "run" / "student")
    run = tmp_path / "p-finetune"
    run.mkdir()
    earlier = {"student": str(source.resolve()), "keep": 0.5, "criterion": "entropy", "attention_blocks": None}
    (run / PRUNING).write_text(json.dumps(earlier))
    check_finetune_folder(run, dict(earlier))  # the same pruning resumes
    with pytest.raises(UserError, match=r"p-finetune is the fine-tune of another pruning .*delete it"):
        prune(source, 0.3, tmp_path / "p", finetune_steps=5)  # refused before pruning: no teacher is needed
    assert not (tmp_path / "p").exists()


def test_an_output_folder_of_the_users_own_files_is_never_replaced(student, tmp_path):
    from muon_ad.models.student import save_student
    from muon_ad.recipes.compress import prune

    source = save_student(student, tmp_path / "run" / "student")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds files that are not an earlier output"):
        prune(source, 0.6, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    first = prune(source, 0.6, tmp_path / "p")
    assert prune(source, 0.5, first) == first  # an earlier output of the command is replaced
