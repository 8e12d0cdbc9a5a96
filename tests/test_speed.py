"""Issue 15: encoder dropouts as settings, SDPA encoders equal to the old nn.MultiheadAttention encoders."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from interp.encoders import Attention
from interp.model import ModelConfig, RoutingModel
from interp.stacked import StackedModels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _old_encoders import OldCrossModalEncoder, OldSelfAttentionEncoder, old_model  # noqa: E402

DIMS = (12, 7, 5)


def _config(**kw) -> ModelConfig:
    base = dict(task="sentiment", variant="routing", input_dims=DIMS, n_concepts=7, d_model=16, n_heads=4, n_layers=2)
    return ModelConfig(**{**base, **kw})


def _inputs(batch: int = 6, lengths=(9, 4, 1)) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randn(batch, t, d, generator=g) for t, d in zip(lengths, DIMS))


@pytest.mark.parametrize("lengths", [(9, 4, 1), (5, 5, 5)])
def test_new_encoders_equal_old_code_in_eval(lengths) -> None:
    torch.manual_seed(0)
    model = RoutingModel(_config(attn_dropout=0.2, relu_dropout=0.3, res_dropout=0.1, embed_dropout=0.2)).eval()
    old = old_model(model)
    x = _inputs(lengths=lengths)
    with torch.no_grad():
        new_out, old_out = model(*x), old(*x)
        torch.testing.assert_close(model.encode(*x), old.encode(*x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new_out.logits, old_out.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new_out.r, old_out.r, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # the old layers' native fast path (inference) against ours
        torch.testing.assert_close(model(*x).logits, old(*x).logits, atol=1e-5, rtol=1e-5)


def test_same_seed_same_initial_weights_as_old_code() -> None:
    """Parameters are created in the old order, so a seed gives the weights the old code drew."""
    c = _config()
    torch.manual_seed(3)
    new = RoutingModel(c)
    torch.manual_seed(3)
    for emb in new.embed:  # the embeddings draw first, as in RoutingModel
        nn.Conv1d(emb.proj.in_channels, c.d_model, 1, bias=False)
    enc = OldSelfAttentionEncoder(c.d_model, c.n_heads, c.n_layers, 0.0)
    for name, value in enc.state_dict().items():
        torch.testing.assert_close(new.self_encoders[0].state_dict()[name], value, atol=0, rtol=0)
    cross = OldCrossModalEncoder(c.d_model, c.n_heads, c.n_layers, 0.0)
    assert set(cross.state_dict()) == set(new.cross_encoders["ta"].state_dict())


def test_training_mode_without_dropout_matches_old_code_and_gradients() -> None:
    torch.manual_seed(0)
    model = RoutingModel(_config(concept_dropout=0.0)).train()
    old = old_model(model).train()
    x = _inputs()
    target = torch.randint(0, 7, (6,), generator=torch.Generator().manual_seed(2))
    for m in (model, old):
        nn.functional.cross_entropy(m(*x).logits, target).backward()
    old_grads = dict(old.named_parameters())
    for name, prm in model.named_parameters():
        torch.testing.assert_close(prm.grad, old_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_attention_key_padding_mask_matches_multihead_attention() -> None:
    torch.manual_seed(0)
    ours = Attention(16, 4, 0.0).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())
    q, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 4:] = True
    pad[2, 1:] = True
    with torch.no_grad():
        expected, _ = ref(q, kv, kv, key_padding_mask=pad, need_weights=False)
        torch.testing.assert_close(ours(q, kv, pad), expected, atol=1e-5, rtol=1e-5)
        expected_self, _ = ref(q, q, q, need_weights=False)
        torch.testing.assert_close(ours(q), expected_self, atol=1e-5, rtol=1e-5)


def test_every_encoder_dropout_acts_in_training_only() -> None:
    x = _inputs()
    for name in ("embed_dropout", "attn_dropout", "relu_dropout", "res_dropout"):
        torch.manual_seed(0)
        model = RoutingModel(_config(concept_dropout=0.0, **{name: 0.5}))
        with torch.no_grad():
            model.train()
            assert not torch.equal(model(*x).logits, model(*x).logits), name
            model.eval()
            assert torch.equal(model(*x).logits, model(*x).logits), name
    torch.manual_seed(0)
    quiet = RoutingModel(_config(concept_dropout=0.0)).train()
    with torch.no_grad():
        assert torch.equal(quiet(*x).logits, quiet(*x).logits)  # no dropout anywhere: training is deterministic


def test_old_configs_keep_their_encoder_dropout() -> None:
    old = _config().to_dict()
    for key in ("relu_dropout", "res_dropout"):
        del old[key]
    old["attn_dropout"] = 0.1
    cfg = ModelConfig.from_dict(old)
    assert (cfg.attn_dropout, cfg.relu_dropout, cfg.res_dropout) == (0.1, 0.1, 0.1)
    assert ModelConfig.from_dict(_config(relu_dropout=0.25).to_dict()).relu_dropout == 0.25
    defaults = ModelConfig(task="sentiment", variant="routing", input_dims=DIMS, n_concepts=7)
    assert (defaults.embed_dropout, defaults.attn_dropout, defaults.relu_dropout, defaults.res_dropout) == (0, 0, 0, 0)
    assert defaults.concept_dropout == 0.5


def test_cli_dropout_flags_reach_the_checkpoint(synth_data: Path, tmp_path: Path) -> None:
    from interp.cli import main
    from interp.checkpoint import read_checkpoint

    out = tmp_path / "m.pt"
    code = main(["train", "--data", str(synth_data), "--out", str(out), "--epochs", "1", "--d-model", "8",
                 "--n-heads", "2", "--n-layers", "1", "--device", "cpu", "--quiet", "--embed-dropout", "0.25",
                 "--attn-dropout", "0.1", "--relu-dropout", "0.2", "--res-dropout", "0.3", "--dropout", "0.4"])
    assert code == 0
    cfg = read_checkpoint(out)["config"]
    assert (cfg["embed_dropout"], cfg["attn_dropout"], cfg["relu_dropout"], cfg["res_dropout"]) == (0.25, 0.1, 0.2, 0.3)
    assert cfg["concept_dropout"] == 0.4
    assert main(["train", "--data", str(synth_data), "--out", str(out), "--res-dropout", "1.5", "--quiet"]) == 2


def test_position_table_kept_between_calls_follows_the_length() -> None:
    """The embeddings keep their sinusoidal table between forwards; a new length (or inference mode) rebuilds it, and
    outputs equal those of a model that never ran before."""
    torch.manual_seed(0)
    model = RoutingModel(_config(concept_dropout=0.0))
    fresh = {name: copy.deepcopy(model) for name in ("long", "short", "train")}
    long, short = _inputs(lengths=(9, 4, 2)), _inputs(lengths=(5, 6, 3))
    model.eval()
    with torch.inference_mode():
        first = model(*long).logits
        torch.testing.assert_close(first, fresh["long"].eval()(*long).logits, atol=0, rtol=0)
        torch.testing.assert_close(model(*short).logits, fresh["short"].eval()(*short).logits, atol=0, rtol=0)
    model.train()
    loss = model(*long).logits.sum()  # training after inference mode: the kept table joins autograd (an add)
    loss.backward()
    expected = fresh["train"].train()(*long).logits.sum()
    assert float(loss.detach()) == float(expected.detach())
    assert "positions" not in " ".join(model.state_dict())


def test_attention_with_heads_padded_matches_multihead_attention_and_its_gradients() -> None:
    """Heads of width 10 padded to 16 (what CUDA gets, for its fused kernels): nn.MultiheadAttention's outputs and
    gradients, with and without a key padding mask."""
    torch.manual_seed(0)
    ours = Attention(20, 2, 0.0, head_multiple=8).eval()
    ref = nn.MultiheadAttention(20, 2, batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())
    q, kv = torch.randn(3, 5, 20, requires_grad=True), torch.randn(3, 7, 20)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 3:] = True
    for source, mask in ((kv, pad), (None, None)):
        keys = q if source is None else source
        expected, _ = ref(q, keys, keys, key_padding_mask=mask, need_weights=False)
        got = ours(q, source, mask)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        weights = torch.randn_like(got)
        grads = torch.autograd.grad((got * weights).sum(), [q, ours.in_proj_weight])
        expected_grads = torch.autograd.grad((expected * weights).sum(), [q, ref.in_proj_weight])
        for value, reference in zip(grads, expected_grads):
            torch.testing.assert_close(value, reference, atol=1e-5, rtol=1e-4)


def test_model_with_heads_padded_gives_the_same_outputs_and_gradients() -> None:
    """Every attention of a model with heads of width 6 padded to 8 (stacked as K = 2 models too): the same logits in
    eval and the same gradients in training as without padding."""
    torch.manual_seed(0)
    model = RoutingModel(_config(d_model=12, n_heads=2, concept_dropout=0.0))
    padded = copy.deepcopy(model)
    for module in padded.modules():
        if isinstance(module, Attention):
            module.head_multiple = 8
    x = _inputs(lengths=(9, 4, 3))
    lengths = torch.tensor([[9, 4, 3], [5, 2, 3], [9, 1, 1], [3, 4, 2], [9, 4, 3], [1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(padded.eval()(*x, lengths, "start").logits,
                                   model.eval()(*x, lengths, "start").logits, atol=1e-5, rtol=1e-5)
    target = torch.randint(0, 7, (6,), generator=torch.Generator().manual_seed(2))
    for m in (model.train(), padded.train()):
        nn.functional.cross_entropy(m(*x, lengths, "start").logits, target).backward()
    grads = dict(model.named_parameters())
    for name, prm in padded.named_parameters():
        torch.testing.assert_close(prm.grad, grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    x2 = [torch.stack([t, t.flip(0)]) for t in x]  # K = 2 stacked models, each with its own batch order
    stacks = [StackedModels([m.eval(), m]).bind().eval() for m in (model, padded)]
    with torch.no_grad():
        torch.testing.assert_close(stacks[1](*x2).logits, stacks[0](*x2).logits, atol=1e-5, rtol=1e-5)
