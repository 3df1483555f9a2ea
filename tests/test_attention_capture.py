import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel, UNet2DModel

from muon_ad.attention import AttentionCapture, attention_probs, resolve_layers, self_attention_layer_names
from muon_ad.errors import UserError

SD15_BLOCKS = dict(
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
LAST = "up_blocks.3.attentions.2.transformer_blocks.0.attn1"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """UNet forwards on a shared 2-core machine are ~10x faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    """SD-1.5 block structure at toy widths: 16 self-attention layers, 4 heads."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 32, 64, 64), cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
        sample_size=8, **SD15_BLOCKS,
    ).eval().requires_grad_(False)  # a frozen teacher: gradients flow to the latent only


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16)


def run(unet, inputs, latent=None):
    x, text = inputs
    return unet(x if latent is None else latent, 10, encoder_hidden_states=text).sample


def processors(unet):
    return {name: m.processor for name, m in unet.named_modules() if hasattr(m, "set_processor")}


def test_sd15_has_16_self_attention_layers_last_6_in_decoder():
    with torch.device("meta"):  # the real SD-1.5 shape, without allocating 3.4 GB
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8, **SD15_BLOCKS
        )
    names = self_attention_layer_names(unet)
    assert len(names) == 16
    assert all(n.startswith("down_blocks.") for n in names[:6])
    assert names[6].startswith("mid_block.")  # mid comes before up, although registered after it
    assert all(n.startswith("up_blocks.") and n.endswith("attn1") for n in names[7:])
    assert resolve_layers(unet, "last6") == resolve_layers(unet, range(-6, 0)) == names[-6:]
    assert {n.split(".")[1] for n in names[-6:]} == {"2", "3"}


def test_capture_is_transparent_and_restores_processors(unet, inputs):
    before = processors(unet)
    with torch.no_grad():
        plain = run(unet, inputs)
        with AttentionCapture(unet, layers="last6", maps="mean") as cap:
            captured = run(unet, inputs)
    assert torch.equal(plain, captured)
    assert processors(unet) == before and not unet._forward_pre_hooks
    assert list(cap.records) == self_attention_layer_names(unet)[-6:]
    rec = cap.records[LAST]
    for key in ("q", "k", "v", "out"):
        assert rec[key].shape == (2, 4, 64, 8)  # (B, heads, 8x8 tokens, 32 channels / 4 heads)
    torch.testing.assert_close(rec["out"], F.scaled_dot_product_attention(rec["q"], rec["k"], rec["v"]))
    assert rec["maps"].shape == (2, 64, 64)


def test_capture_is_transparent_on_unconditional_unet():
    """UNet2DModel's attention exercises the group-norm and residual paths of the processor."""
    torch.manual_seed(4)
    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        plain = unet(x, 5).sample
        with AttentionCapture(unet) as cap:
            captured = unet(x, 5).sample
    assert torch.equal(plain, captured)
    assert list(cap.records)[1] == "mid_block.attentions.0" and len(cap.records) == 4


def test_processors_restored_when_block_raises(unet, inputs):
    before = processors(unet)
    with pytest.raises(RuntimeError, match="boom"), AttentionCapture(unet):
        raise RuntimeError("boom")
    assert processors(unet) == before and not unet._forward_pre_hooks


def test_each_forward_starts_fresh_records(unet, inputs):
    x, _ = inputs
    with torch.no_grad(), AttentionCapture(unet, layers=[-1], record=("k",)) as cap:
        run(unet, inputs)
        first = cap.records
        run(unet, inputs, latent=x + 1)
    assert set(first[LAST]) == {"k"}
    assert not torch.equal(first[LAST]["k"], cap.records[LAST]["k"])
    cap.clear()
    assert cap.records == {}


def test_maps_match_explicit_softmax():
    torch.manual_seed(2)
    q, k = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 7, 4)
    full = (q @ k.transpose(-1, -2) / 2).softmax(-1)  # scale 1/sqrt(4)
    torch.testing.assert_close(attention_probs(q, k), full)
    torch.testing.assert_close(attention_probs(q, k, mean_heads=True, chunk=3), full.mean(1))
    blocked = torch.ones(7, dtype=torch.bool).index_fill(0, torch.tensor([0]), False)
    assert attention_probs(q, k, mask=blocked)[..., 0].abs().max() == 0


def test_chunked_mean_maps_backpropagate_like_full_maps():
    torch.manual_seed(3)
    q, k = torch.randn(1, 2, 9, 4, requires_grad=True), torch.randn(1, 2, 9, 4, requires_grad=True)
    weights = torch.randn(1, 9, 9)
    chunked = torch.autograd.grad((attention_probs(q, k, mean_heads=True, chunk=4) * weights).sum(), (q, k))
    full = torch.autograd.grad((attention_probs(q, k).mean(1) * weights).sum(), (q, k))
    for a, b in zip(chunked, full):
        torch.testing.assert_close(a, b)


def test_gradients_reach_the_latent_through_records(unet, inputs):
    latent = inputs[0].clone().requires_grad_()
    with AttentionCapture(unet, layers="last6", maps="mean") as cap:
        run(unet, inputs, latent=latent)
        loss = sum(r["out"].abs().mean() + r["maps"].square().mean() for r in cap.records.values())
    loss.backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0


def test_cross_attention_by_name_and_nothing_recorded(unet, inputs):
    cross = LAST.replace("attn1", "attn2")
    with torch.no_grad(), AttentionCapture(unet, layers=[cross], maps="full") as cap:
        run(unet, inputs)
    assert cap.records[cross]["k"].shape == (2, 4, 5, 8)  # keys come from the 5 text tokens
    assert cap.records[cross]["maps"].shape == (2, 4, 64, 5)
    with torch.no_grad(), AttentionCapture(unet, layers="last2", record=()) as cap:
        run(unet, inputs)
    assert all(record == {} for record in cap.records.values()) and len(cap.records) == 2


@pytest.mark.parametrize("layers", ["up_blocks.3", 16, -17, "last17", "last0"])
def test_bad_layer_choice_is_a_user_error(unet, layers):
    with pytest.raises(UserError):
        AttentionCapture(unet, layers=layers)
