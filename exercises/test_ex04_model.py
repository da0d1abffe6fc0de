"""Grader for chapter 4: exercises/ex04_model.py (it uses your ex03_attention.py).

The expected outputs are computed in the grader's process (``_grader/oracles.py``)
from the weights the grader set, so a block or a model that is wrong only
because its attention is wrong points back to chapter 3: finish it first.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import _grader.oracles as ref
from _grader.cases import TINY_GPT, probe_module, probe_on_another_device  # noqa: F401 (probes run in the worker)
from _grader.grading import (SNAPSHOT_ATOL, SNAPSHOT_RTOL, assert_close, assert_number, assert_param_names, assert_tensor,
                      check, check_buffers, check_device_ready, fail, seeded_weights)

CHAPTER_3 = (" (this runs your MultiHeadAttention from ex03_attention.py: make chapter 3 pass first; "
             "if it does, the difference is in the block)")
BIG = dict(vocab_size=65, context_length=16, d_model=32, num_heads=4, num_blocks=2)


def block_params(prefix, d, num_heads):
    hs = d // num_heads
    names = {f"{prefix}attn.heads.{h}.{p}.weight": (hs, d) for h in range(num_heads) for p in ("key", "query", "value")}
    names.update({
        f"{prefix}attn.proj.weight": (d, d), f"{prefix}attn.proj.bias": (d,),
        f"{prefix}ln1.weight": (d,), f"{prefix}ln1.bias": (d,),
        f"{prefix}ln2.weight": (d,), f"{prefix}ln2.bias": (d,),
        f"{prefix}ffwd.up.weight": (4 * d, d), f"{prefix}ffwd.up.bias": (4 * d,),
        f"{prefix}ffwd.down.weight": (d, 4 * d), f"{prefix}ffwd.down.bias": (d,),
    })
    return names


def tinygpt_params(vocab_size, context_length, d_model, num_heads, num_blocks):
    names = {"token_embedding.weight": (vocab_size, d_model), "position_embedding.weight": (context_length, d_model),
             "ln_f.weight": (d_model,), "ln_f.bias": (d_model,),
             "lm_head.weight": (vocab_size, d_model), "lm_head.bias": (vocab_size,)}
    for b in range(num_blocks):
        names.update(block_params(f"blocks.{b}.", d_model, num_heads))
    return names


def probe_forward(m, kwargs, idx, targets, too_long):
    """Runs in the worker: TinyGPT with its own initialisation, with and without targets, and too long an input."""
    torch.manual_seed(0)
    model = m.TinyGPT(**kwargs)
    logits, loss = model(idx)
    out = {"logits_alone": logits, "loss_alone": loss if loss is None else repr(type(loss).__name__),
           "logits_and_loss": model(idx, targets)}
    try:
        model(too_long)
        out["too_long"] = None
    except Exception as exc:
        out["too_long"] = [c.__name__ for c in type(exc).__mro__]
    return out


def probe_initialisation(m, kwargs, idx, targets):
    """Runs in the worker: the learner's own initial weights and the loss they give."""
    torch.manual_seed(0)
    model = m.TinyGPT(**kwargs)
    with torch.no_grad():
        _, loss = model(idx, targets)
    kinds = {name: type(module).__name__ for name, module in model.named_modules()}
    return {"loss": loss, "state": {n: p.detach() for n, p in model.named_parameters()}, "kinds": kinds}


def probe_training(m, kwargs, idx, targets, steps, lr):
    """Runs in the worker: a few AdamW steps from the learner's own initialisation on one batch."""
    torch.manual_seed(0)
    model = m.TinyGPT(**kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def big_batch(vocab_size=65, shape=(8, 16)):
    g = torch.Generator().manual_seed(1)
    return torch.randint(vocab_size, shape, generator=g), torch.randint(vocab_size, shape, generator=g)


@pytest.mark.points(2)
def test_feed_forward(ex):
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    info = ex.probe(probe_module, "FeedForward", dict(d_model=8), 0, [[x]], describe="FeedForward(8) on x (2, 5, 8)")
    assert_param_names(info["params"], {"up.weight": (32, 8), "up.bias": (32,), "down.weight": (8, 32),
                                        "down.bias": (8,)}, "FeedForward(8)")
    expected = ref.feed_forward(seeded_weights(info["params"], 0), "", x)
    assert_close(info["outputs"][0], expected, "FeedForward output (down(gelu(up(x))), the exact GELU)", atol=1e-5)


@pytest.mark.points(1)
def test_block_layers(ex):
    info = ex.probe(probe_module, "Block", dict(d_model=8, num_heads=2, context_length=6), None, [],
                    ("ln1", "ln2", "attn", "ffwd"), describe="Block(d_model=8, num_heads=2, context_length=6)")
    for name, kind in [("ln1", "LayerNorm"), ("ln2", "LayerNorm"), ("attn", "Module"), ("ffwd", "Module")]:
        check(kind in info["types"][name], f"Block.{name} should be an nn.{kind}, got {info['types'][name][0]}")
    assert_param_names(info["params"], block_params("", 8, 2), "Block(8, 2, 6)")


@pytest.mark.points(2)
def test_block_is_pre_layernorm_with_residuals(ex):
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(3))
    info = ex.probe(probe_module, "Block", dict(d_model=8, num_heads=2, context_length=6), 2, [[x]],
                    describe="Block(8, 2, 6) on x (2, 6, 8)")
    assert_param_names(info["params"], block_params("", 8, 2), "Block(8, 2, 6)")
    expected = ref.block(seeded_weights(info["params"], 2), "", x, num_heads=2)
    assert_close(info["outputs"][0], expected,
                 "Block output (x = x + attn(ln1(x)); x = x + ffwd(ln2(x)))" + CHAPTER_3, atol=1e-5)


@pytest.mark.points(2)
def test_tinygpt_layers(ex):
    info = ex.probe(probe_module, "TinyGPT", TINY_GPT, None, [], describe=f"TinyGPT(**{TINY_GPT})")
    assert_param_names(info["params"], tinygpt_params(**TINY_GPT), "TinyGPT(vocab_size=11, context_length=6, "
                                                                   "d_model=8, num_heads=2, num_blocks=2)")
    check_buffers(info, "TinyGPT")
    idx = torch.randint(11, (2, 5), generator=torch.Generator().manual_seed(3))
    check_device_ready(ex.probe(probe_on_another_device, "TinyGPT", TINY_GPT, [idx],
                                describe="TinyGPT moved to another device"), "TinyGPT")


@pytest.mark.points(2)
def test_tinygpt_forward_shapes_and_loss(ex):
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(11, (3, 4), generator=g)  # T=4 < context_length=6 must work
    targets = torch.randint(11, (3, 4), generator=g)
    got = ex.probe(probe_forward, TINY_GPT, idx, targets, torch.zeros(1, 7, dtype=torch.long),
                   describe="TinyGPT(...)(idx of shape (3, 4)), with and without targets")
    assert_tensor(got["logits_alone"], "logits for idx of shape (3, 4)", shape=(3, 4, 11))
    check(got["loss_alone"] is None, f"without targets the loss should be None, got a {got['loss_alone']}")
    logits, loss = got["logits_and_loss"]
    assert_tensor(loss, "loss", shape=())
    assert_close(loss, F.cross_entropy(logits.reshape(12, 11), targets.reshape(12)),
                 "loss (mean cross-entropy of logits against targets)", atol=1e-5)
    if got["too_long"] is None or "ValueError" not in got["too_long"]:
        fail(f"model(idx of shape (1, 7)) with context_length=6 should raise ValueError (a sequence longer than "
             f"context_length), but it {'returned' if got['too_long'] is None else 'raised ' + got['too_long'][0]}")


@pytest.mark.points(2)
def test_tinygpt_matches_reference(ex):
    got, expected = ex.case("tinygpt_output")
    hint = " (token + position embeddings, the blocks, ln_f, lm_head; parameters set by name)"
    assert_close(got["logits"], torch.as_tensor(expected["logits"]), "logits of the tiny model" + hint,
                 atol=SNAPSHOT_ATOL, rtol=SNAPSHOT_RTOL)
    assert_number(got["loss"], expected["loss"], "loss of the tiny model", atol=SNAPSHOT_ATOL, rtol=SNAPSHOT_RTOL)


@pytest.mark.points(2)
def test_tinygpt_loss_at_init_is_about_ln_vocab(ex):
    idx, targets = big_batch()
    got = ex.probe(probe_initialisation, BIG, idx, targets, describe=f"TinyGPT(**{BIG}) as initialised")
    loss = got["loss"]
    assert_tensor(loss, "loss at initialisation", shape=())
    expected = math.log(65)
    check(abs(loss.item() - expected) < 0.1,
          f"loss at initialisation is {loss.item():.3f}, expected about ln(65) = {expected:.3f} (within 0.1): "
          f"initialise the Linear and Embedding weights with std 0.02 and the biases with zeros")
    for name, value in got["state"].items():
        owner = got["kinds"].get(name.rsplit(".", 1)[0], "")
        if owner == "LayerNorm":
            default = 1.0 if name.endswith("weight") else 0.0
            check(bool((value == default).all()), f"{name} should keep LayerNorm's default ({default:g} everywhere) "
                                                  f"at initialisation, got values with std {value.std().item():.3g}")
        elif name.endswith("bias"):
            check(bool((value == 0).all()), f"{name} should be zero at initialisation (nn.init.zeros_)")
        elif value.numel() >= 64:
            std = value.std().item()
            check(0.012 < std < 0.028, f"{name} should be drawn with std 0.02 at initialisation, its std is {std:.3g}")


@pytest.mark.points(2)
def test_a_few_steps_from_your_initialisation_lower_the_loss(ex):
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(16, (8, 8), generator=g)
    targets = (idx + 1) % 16  # each token predicts the next id: learnable, and every target as frequent
    kwargs = dict(vocab_size=16, context_length=8, d_model=32, num_heads=4, num_blocks=2)
    losses = ex.probe(probe_training, kwargs, idx, targets, 8, 1e-2,
                      describe=f"8 AdamW steps (lr 0.01) of TinyGPT(**{kwargs}) from its own initialisation")
    check(len(losses) == 8 and all(isinstance(v, float) and math.isfinite(v) for v in losses),
          f"the losses of 8 training steps should be 8 finite numbers, got {losses}")
    check(losses[-1] < losses[0] - 0.5,
          f"8 AdamW steps on one batch took the loss from {losses[0]:.3f} to only {losses[-1]:.3f}: the model does not "
          f"learn from its initialisation (weights all zero? every weight must start small and random, std 0.02)")


@pytest.mark.points(2)
def test_tinygpt_is_causal(ex):
    idx = torch.randint(11, (2, 6), generator=torch.Generator().manual_seed(2))
    idx2 = idx.clone()
    idx2[:, 4] = (idx2[:, 4] + 1) % 11
    info = ex.probe(probe_module, "TinyGPT", TINY_GPT, 9, [[idx], [idx2]],
                    describe="TinyGPT on idx and on idx with the token at position 4 changed")
    (a, _), (b, _) = info["outputs"]
    for t in range(4):
        check(torch.allclose(a[:, t], b[:, t], atol=1e-5),
              f"logits at position {t} changed when only the token at position 4 changed: "
              f"the model is looking at the future")
