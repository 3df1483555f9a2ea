"""ONNX export, int8 quantisation and the ONNX Runtime student: parity with torch, quality, loading, bad input.

One tiny student is exported once per module (the dynamo exporter dominates the cost); the fp32 and int8 export
folders reuse those graphs (`reuse=`), so what they test is parity, calibration, quantisation, the folder and its
report."""

import json
import shutil
import subprocess
import sys

import onnx
import pytest
import torch

from muon_ad.compress.quant import has_vnni
from muon_ad.errors import UserError
from muon_ad.export.onnx import MODEL, export_onnx, graph_parity, strided_stem
from muon_ad.models.student import Student, StudentConfig, save_student
from muon_ad.recipes.export import export_student
from muon_ad.runtime import encode_style, load_backend, run_student
from muon_ad.runtime.backends import OnnxStudent, TorchStudent

TINY = StudentConfig(base_channels=8, channel_mult=(1, 2), stem_stride=2, heads=2, style_channels=(8, 16), style_dim=16, style_grid=2,
                     style_size=32, norm_groups=4)


def _student() -> Student:
    torch.manual_seed(0)
    student = Student(TINY).eval()
    torch.nn.init.normal_(student.output_layer.weight, std=0.5)  # a fresh head is zero: the identity map, nothing to lose
    return student


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    student, folder = _student(), tmp_path_factory.mktemp("graphs")
    export_onnx(student, folder)
    return student, folder


@pytest.fixture(scope="module")
def exported(graphs, tmp_path_factory):
    """(student, {precision: export folder}) with fp32 and int8 exports made by `export_student`."""
    student, folder = graphs
    root = tmp_path_factory.mktemp("exports")
    return student, {precision: export_student(student, root / precision, precision, calibration=48, size=32,
                                               reuse=folder) for precision in ("fp32", "int8")}


def test_exported_graphs_match_torch_at_sizes_off_the_stride(graphs):
    student, folder = graphs
    report = graph_parity(student, folder, [(37, 53), (70, 22)])
    assert set(report["sizes"]) == {"37x53", "70x22"}
    assert report["max_abs_diff"] < 1e-4, report


def test_the_texture_student_exports_and_matches_torch_with_styles_of_any_size(tmp_path):
    cfg = StudentConfig(base_channels=8, channel_mult=(1, 2), stem_stride=4, heads=2, style_channels=(8, 16),
                        style_dim=16, norm_groups=4, style_injection="statistics", style_size=None,
                        position_periods=(8, 16), head="refine")
    torch.manual_seed(0)
    student = Student(cfg).eval()
    torch.nn.init.normal_(student.refine[2].weight, std=0.05)
    export_onnx(student, tmp_path)
    report = graph_parity(student, tmp_path, [(37, 53), (64, 96)])
    assert report["max_abs_diff"] < 1e-4, report
    save_student(student, tmp_path / "student")
    export = export_student(tmp_path / "student", tmp_path / "fp32", "fp32", calibration=8, size=32, reuse=tmp_path)
    backend, reference = load_backend(export), load_backend(tmp_path / "student")
    assert backend.style_size is None
    content = torch.rand(1, 3, 40, 40) * 2 - 1
    for side in (24, 80):  # the style graph takes the style as given, at any size
        style = torch.rand(1, 3, side, side) * 2 - 1
        got = run_student(backend, content, encode_style(backend, style))
        assert (got - run_student(reference, content, encode_style(reference, style))).abs().max() < 1e-4


def test_a_student_pruned_to_one_transformer_block_exports_smaller_and_matches_torch(graphs, tmp_path):
    from muon_ad.compress.prune import prune_student, transformer_blocks

    student, folder = graphs
    small = prune_student(student, 0.5, None, "magnitude", attention_blocks=1)
    assert len(transformer_blocks(small)) == 1
    export_onnx(small, tmp_path)
    assert graph_parity(small, tmp_path, [(37, 53)])["max_abs_diff"] < 1e-4
    nodes = {name: len(onnx.load(str(f / MODEL)).graph.node) for name, f in (("full", folder), ("small", tmp_path))}
    assert nodes["small"] < nodes["full"] - 80, nodes  # two transformer blocks of ~49 nodes each gone (self-attention)


def test_strided_stem_is_the_students_stem_and_the_graph_never_reshapes_the_image(graphs):
    student, folder = graphs
    torch.manual_seed(3)
    image = torch.rand(2, 3, 12, 20) * 2 - 1
    with torch.no_grad():
        assert (strided_stem(student.stem)(image) - student.stem(image)).abs().max() < 1e-5
    graph = onnx.load(str(folder / MODEL)).graph
    readers = {node.op_type for node in graph.node if "content" in node.input}  # also Shape, and the head's Clip
    assert "Conv" in readers and not readers & {"Reshape", "Transpose"}, readers  # no unshuffle's 6-D Transpose


def test_export_folder_runs_through_the_runtime_like_the_torch_student(exported):
    student, folders = exported
    backend = load_backend(folders["fp32"])
    assert isinstance(backend, OnnxStudent) and backend.multiple == TINY.downsampling
    assert isinstance(load_backend(folders["fp32"] / MODEL), OnnxStudent)  # named by its model file
    torch.manual_seed(1)
    content, style = torch.rand(2, 3, 45, 61) * 2 - 1, torch.rand(3, 50, 40) * 2 - 1
    reference = TorchStudent(student)
    expected = run_student(reference, content, encode_style(reference, style))
    got = run_student(backend, content, encode_style(backend, style))
    assert got.shape == expected.shape and (got - expected).abs().max() < 1e-4
    report = json.loads((folders["fp32"] / "report.json").read_text())
    assert report["parity"]["max_abs_diff"] < 1e-4 and report["quality"]["ssim_vs_fp32"] > 0.999


def test_int8_student_stays_close_to_fp32_and_is_smaller(exported):
    student, folders = exported
    report = json.loads((folders["int8"] / "report.json").read_text())
    assert report["calibration"]["pairs"] == 48 and report["calibration"]["reduce_range"] == (not has_vnni())
    assert report["quality"]["ssim_vs_fp32"] > 0.95, report["quality"]
    assert report["quality"]["max_abs_diff_vs_fp32"] > 1e-4  # it is quantised, not the fp32 graph under a new name
    fp32 = json.loads((folders["fp32"] / "report.json").read_text())
    assert report["files_mb"]["model.onnx"] < 0.6 * fp32["files_mb"]["model.onnx"]
    # The floor means something: the content image itself (what a student that does nothing returns) is far below it.
    backend = load_backend(folders["int8"])
    torch.manual_seed(2)
    content, style = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    from muon_ad.eval.quality import ssim

    fp32_images = torch.cat([run_student(TorchStudent(student), c, encode_style(TorchStudent(student), s))
                             for c, s in zip(content, style)])
    int8_images = torch.cat([run_student(backend, c, encode_style(backend, s)) for c, s in zip(content, style)])
    assert ssim(int8_images, fp32_images) > 0.95 > ssim(content, fp32_images)


def test_int8_graph_keeps_the_stem_fp32_and_takes_shapes_from_quantised_tensors(exported):
    _, folders = exported
    graph = onnx.load(str(folders["int8"] / MODEL)).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    stem = [node for node in convs if "content" in node.input]
    assert len(stem) == 1 and producers.get(stem[0].input[1]) != "DequantizeLinear"  # its weight is fp32
    assert all(producers.get(node.input[1]) == "DequantizeLinear" for node in convs if node not in stem)
    shapes = [node for node in graph.node if node.op_type == "Shape"]
    assert shapes and not [node for node in shapes if producers.get(node.input[0]) == "DequantizeLinear"]


def test_profile_times_exports_side_by_side_and_splits_kernel_time_by_op_and_node(exported, tmp_path):
    from muon_ad.eval.onnx_profile import profile_exports

    _, folders = exported
    report = profile_exports([folders["fp32"], folders["int8"]], [32], threads=1, repeats=4)
    figures = report[32]
    assert list(figures) == [str(folders["fp32"]), str(folders["int8"])]
    for export, kind in ((folders["fp32"], "Conv"), (folders["int8"], "QLinearConv")):
        ops, nodes = figures[str(export)]["ops"], figures[str(export)]["nodes"]
        assert figures[str(export)]["ms"] > 0 and kind in ops  # the int8 graph runs ORT's int8 kernels
        assert abs(sum(ops.values()) - sum(nodes.values())) < 1e-6 * max(1.0, sum(ops.values()))
        assert list(ops.values()) == sorted(ops.values(), reverse=True)
    result = subprocess.run([sys.executable, "-m", "muon_ad", "profile", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("muon-ad: error: not an exported student folder")


def test_bad_exports_and_inputs_are_one_line_errors(exported, tmp_path):
    _, folders = exported
    with pytest.raises(UserError, match="not a student folder"):
        export_student(tmp_path, tmp_path / "out")
    corrupt = shutil.copytree(folders["fp32"], tmp_path / "corrupt")
    (corrupt / MODEL).write_bytes(b"not an onnx file")
    with pytest.raises(UserError, match="corrupt"):
        load_backend(corrupt)
    (corrupt / "checksums.json").unlink()  # without checksums ONNX Runtime itself refuses the file
    with pytest.raises(UserError, match="does not load in ONNX Runtime"):
        load_backend(corrupt)
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    for i in range(3):
        (unreadable / f"{i}.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no usable image"):
        export_student(_student(), tmp_path / "never", "int8", calibration=2, content="folder",
                       content_path=str(unreadable))
    assert not (tmp_path / "never").exists() and not list(tmp_path.glob(".never*"))
    backend = load_backend(folders["fp32"])
    code = encode_style(backend, torch.zeros(3, 32, 32))
    with pytest.raises(UserError, match="multiples of 4 up to"):
        backend.run(torch.zeros(1, 3, 30, 32), code)  # run_student pads; a caller that does not is told


def test_cli_export_of_a_folder_that_is_not_a_student(tmp_path):
    result = subprocess.run([sys.executable, "-m", "muon_ad", "export", str(tmp_path), "--out", str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and not (tmp_path / "x").exists()
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line (torchao's import logs quieted)
    assert result.stderr.startswith("muon-ad: error: not a student folder")
