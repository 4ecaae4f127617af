"""GASS against a slow reference written here from the formulas of docs/method.md section 3: per sample, per layer, its own forward and
`autograd.grad`, float64, the library's `F.interpolate` for the multi-scale pooling."""

import copy

import pytest
import torch
import torch.nn.functional as F

from modeling_gadms import GADMSConfig, GADMSModel, GADMSObjectiveConfig
from modeling_gadms.gass import eos_positions, gass_scores, multi_scale_pool

VOCAB = 300
EOS_AT = [4, 9, 15, 30]  # several caption lengths, so padding differs per caption
TEXT_LAYERS = 3
GASS_LAYERS = 2  # the last 2 of the 3 text layers: the first one runs without autograd
GASS_SCALES = (1, 2, 3)
# passed explicitly: the model config holds no GASS settings
GASS = {"num_layers": GASS_LAYERS, "scales": GASS_SCALES}


@pytest.fixture(scope="module")
def model():
    base = GADMSConfig.tiny(vocab_size=VOCAB)
    text = {**base.text_config.to_dict(), "num_hidden_layers": TEXT_LAYERS}
    text = {k: v for k, v in text.items() if k not in ("model_type", "transformers_version")}
    config = GADMSConfig.tiny(vocab_size=VOCAB, text_config=text)
    torch.manual_seed(0)
    model = GADMSModel(config).double()
    with torch.no_grad():  # give layer norms and biases non-trivial values
        for name, param in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model


def _batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB - 3, (len(EOS_AT), 77), generator=generator)
    ids[:, 0] = VOCAB - 2
    for row, eos in enumerate(EOS_AT):
        ids[row, eos] = VOCAB - 1
        ids[row, eos + 1:] = 0
    images = torch.randn(len(EOS_AT), 32, generator=generator, dtype=torch.float64)
    return ids, images


def _msp(x, scales):
    """MSP of `(n, d)` over its n positions: window means interpolated back with F.interpolate."""
    n = x.shape[0]
    out = []
    for s in scales:
        windows = [x[i:i + s].mean(dim=0) for i in range(0, n, s)]
        pooled = torch.stack(windows).t().unsqueeze(0)  # (1, d, windows)
        out.append(F.interpolate(pooled, size=n, mode="linear", align_corners=False)[0].t())
    return torch.stack(out).mean(dim=0)


def _minmax(x):
    return (x - x.min()) / (x.max() - x.min() + 1e-8)


def _captured_paper_forward(model, ids, layer_index):
    """The model's own (eager) text forward for one caption, capturing q, k, v and the attention output."""
    attn = model.text_model.encoder.layers[layer_index].self_attn
    store = {}
    handles = [
        attn.q_proj.register_forward_hook(lambda m, i, o: store.__setitem__("q", o)),
        attn.k_proj.register_forward_hook(lambda m, i, o: store.__setitem__("k", o)),
        attn.v_proj.register_forward_hook(lambda m, i, o: store.__setitem__("v", o)),
        attn.out_proj.register_forward_pre_hook(lambda m, i: store.__setitem__("o", i[0])),
    ]
    out = model.text_model(input_ids=ids, output_attentions=True)
    for handle in handles:
        handle.remove()
    return out, store


def reference_paper(model, ids, images):
    config = model.config
    model.set_attn_implementation("eager")
    layers = model.config.text_config.num_hidden_layers
    scores = torch.zeros(ids.shape, dtype=torch.float64)
    for b in range(ids.shape[0]):
        one = ids[b:b + 1]
        eos = int((one[0] == config.text_config.eos_token_id).nonzero()[0])
        n = eos + 1
        total = torch.zeros(n, dtype=torch.float64)
        for l in range(layers - GASS_LAYERS, layers):
            out, store = _captured_paper_forward(model, one, l)
            text = model.text_projection(out.pooler_output)[0]
            sim = F.cosine_similarity(text, images[b], dim=0)
            (g,) = torch.autograd.grad(sim, store["o"])
            g = g[0, eos]
            q, k, v = store["q"][0, :n].detach(), store["k"][0, :n].detach(), store["v"][0, :n].detach()
            mq, mk = _msp(q, GASS_SCALES), _msp(k, GASS_SCALES)
            w = _minmax(torch.stack([F.cosine_similarity(mq[eos], mk[j], dim=0) for j in range(n)]))
            s_g = w * (v @ g)
            a = out.attentions[l][0].mean(dim=0)[eos, :n].detach()
            s_a = a / a.sum()
            total += s_g * s_a
        raw = torch.relu(total / GASS_LAYERS)
        ordinary = raw[1:eos]
        scores[b, 1:eos] = _minmax(ordinary)
    model.set_attn_implementation("sdpa")
    return scores


def reference_released(model, ids, images):
    config = model.config
    text_model = model.text_model
    layers = config.text_config.num_hidden_layers
    first = layers - GASS_LAYERS
    width = config.text_config.hidden_size
    positions = ids.shape[1]
    causal = torch.full((positions, positions), float("-inf"), dtype=torch.float64).triu(1)
    evidence = torch.zeros(ids.shape, dtype=torch.float64)
    for b in range(ids.shape[0]):
        one = ids[b:b + 1]
        eos = int((one[0] == config.text_config.eos_token_id).nonzero()[0])
        m = torch.zeros(positions, dtype=torch.float64)
        m[1:eos] = 1
        for target in range(first, layers):
            with torch.no_grad():
                hidden = text_model(input_ids=one, output_hidden_states=True).hidden_states[first][0]
            store = {}
            for l in range(first, layers):
                layer = text_model.encoder.layers[l]
                x = layer.layer_norm1(hidden)
                q = layer.self_attn.q_proj(x)
                k = layer.self_attn.k_proj(x)
                v = layer.self_attn.v_proj(x)
                attention = torch.softmax(q @ k.t() / width**0.5 + causal, dim=-1)
                o = attention @ v
                if l == target:
                    store = {"q": q.detach(), "k": k.detach(), "v": v.detach(), "A": attention.detach(), "o": o}
                hidden = hidden + layer.self_attn.out_proj(o)
                hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
            text = model.text_projection(text_model.final_layer_norm(hidden)[eos])
            sim = F.cosine_similarity(text, images[b], dim=0)
            (g,) = torch.autograd.grad(sim, store["o"])
            g = g[eos]
            mq, mk = _msp(store["q"], GASS_SCALES), _msp(store["k"], GASS_SCALES)
            w = _minmax(torch.stack([F.cosine_similarity(mq[eos], mk[j], dim=0) for j in range(positions)]))
            r = w * (store["v"] @ g)
            a = store["A"][eos] * m / (r.sum() + 1e-8)
            evidence[b] += r * m * a
        evidence[b] = torch.relu(evidence[b]) * m
    return (evidence - evidence.min()) / (evidence.max() - evidence.min())


def test_paper_variant_matches_reference(model):
    ids, images = _batch()
    ours = gass_scores(model, ids, images, variant="paper", **GASS)
    expected = reference_paper(model, ids, images)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert ours.max() > 0.99  # each caption's scores span [0, 1]
    for row, eos in enumerate(EOS_AT):
        assert ours[row, 0] == 0 and (ours[row, eos:] == 0).all()


def test_released_variant_matches_reference(model):
    ids, images = _batch()
    ours = gass_scores(model, ids, images, variant="released", **GASS)
    expected = reference_released(model, ids, images)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_paper_scores_do_not_depend_on_padding_or_batch_mates(model):
    ids, images = _batch()
    full = gass_scores(model, ids, images, variant="paper", **GASS)
    padded = ids.clone()
    padded[ids == 0] = 5  # other ids after EOS
    torch.testing.assert_close(gass_scores(model, padded, images, variant="paper", **GASS), full)
    torch.testing.assert_close(gass_scores(model, ids[1:3], images[1:3], variant="paper", **GASS), full[1:3])


def test_released_scores_do_not_depend_on_the_batch_width(model):
    """The released formula runs over all 77 positions: captions padded only to the batch's longest get the
    same scores as at 77 (padded out with id 0 inside), and the same width comes back."""
    ids, images = _batch()
    full = gass_scores(model, ids, images, variant="released", **GASS)
    width = max(EOS_AT) + 1
    narrow = gass_scores(model, ids[:, :width], images, variant="released", **GASS)
    assert narrow.shape == (len(EOS_AT), width)
    torch.testing.assert_close(narrow, full[:, :width], atol=1e-6, rtol=0)
    assert (full[:, width:] == 0).all()


def test_scores_are_float32_under_autocast(model):
    """Under bfloat16 autocast the towers run in bfloat16, but the scoring maths (pooling, min-max) does not."""
    ids, images = _batch()
    model32 = copy.deepcopy(model).float()
    exact = gass_scores(model32, ids, images.float(), variant="paper", **GASS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = gass_scores(model32, ids, images.float(), variant="paper", **GASS)
    assert amp.dtype == torch.float32
    assert (amp - exact).abs().mean() < 0.05


def test_no_gradient_reaches_the_weights(model):
    ids, images = _batch()
    model.zero_grad(set_to_none=True)
    gass_scores(model, ids, images, **GASS)
    assert all(p.grad is None for p in model.parameters())
    frozen = [p.requires_grad_(False) for p in model.parameters()]
    try:
        assert gass_scores(model, ids, images, **GASS).shape == ids.shape  # works with frozen weights too
    finally:
        for p in frozen:
            p.requires_grad_(True)


def test_single_autograd_grad_call(model, monkeypatch):
    calls = []
    original = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(len(args[1]) if len(args) > 1 else len(kwargs["inputs"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    ids, images = _batch()
    gass_scores(model, ids, images, **GASS)
    assert calls == [GASS_LAYERS]
    # Without num_layers: 8, or all layers of a shallower tower (here 3), as the objective resolves it.
    calls.clear()
    gass_scores(model, ids, images, scales=GASS_SCALES)
    assert calls == [TEXT_LAYERS] == [GADMSObjectiveConfig().num_gass_layers(TEXT_LAYERS)]


def test_multi_scale_pool_against_interpolate():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 11, 5, dtype=torch.float64)
    lengths = torch.tensor([11, 7, 1])
    pooled = multi_scale_pool(x, lengths, [1, 2, 4])
    for layer in range(2):
        for b, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(pooled[layer, b, :n], _msp(x[layer, b, :n], [1, 2, 4]))
            assert (pooled[layer, b, n:] == 0).all()


def test_errors(model):
    ids, images = _batch()
    no_eos = ids.clone()
    no_eos[2][no_eos[2] == VOCAB - 1] = 7
    with pytest.raises(ValueError, match=r"captions \[2\] of the batch have no end-of-text token"):
        eos_positions(no_eos, VOCAB - 1)
    with pytest.raises(ValueError, match="unknown GASS variant"):
        gass_scores(model, ids, images, variant="mine")
    for layers in (0, TEXT_LAYERS + 1):
        with pytest.raises(ValueError, match=r"num_layers must lie in \[1, 3\]"):
            gass_scores(model, ids, images, num_layers=layers)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="GASS needs autograd"):
        gass_scores(model, ids, images, **GASS)
