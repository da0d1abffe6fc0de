"""Grader for chapter 4: exercises/ex04_model.py (it uses your ex03_attention.py)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _cases import SNAPSHOT_CASES, TINY_GPT
from _grading import (assert_close, assert_number, assert_param_names, assert_tensor, check,
                      fill_parameters, load_snapshot, SNAPSHOT_ATOL, SNAPSHOT_RTOL)

SNAPSHOT = load_snapshot("ex04_model")


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


@pytest.mark.points(2)
def test_feed_forward(ex):
    ff = ex.FeedForward(8)
    assert_param_names(ff, {"up.weight": (32, 8), "up.bias": (32,), "down.weight": (8, 32), "down.bias": (8,)},
                       "FeedForward(8)")
    fill_parameters(ff, seed=0)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = ff(x)
        expected = F.linear(F.gelu(F.linear(x, ff.up.weight, ff.up.bias)), ff.down.weight, ff.down.bias)
    assert_close(got, expected, "FeedForward output (down(gelu(up(x))))", atol=1e-5)


@pytest.mark.points(1)
def test_block_layers(ex):
    block = ex.Block(d_model=8, num_heads=2, context_length=6)
    for name, kind in [("ln1", nn.LayerNorm), ("ln2", nn.LayerNorm), ("attn", nn.Module), ("ffwd", nn.Module)]:
        check(isinstance(getattr(block, name, None), kind), f"Block.{name} should be an {kind.__name__}")
    assert_param_names(block, block_params("", 8, 2), "Block(8, 2, 6)")


@pytest.mark.points(2)
def test_block_is_pre_layernorm_with_residuals(ex):
    block = ex.Block(d_model=8, num_heads=2, context_length=6)
    fill_parameters(block, seed=2)
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = block(x)
        h = x + block.attn(F.layer_norm(x, (8,), block.ln1.weight, block.ln1.bias))
        expected = h + block.ffwd(F.layer_norm(h, (8,), block.ln2.weight, block.ln2.bias))
    assert_close(got, expected, "Block output (x = x + attn(ln1(x)); x = x + ffwd(ln2(x)))", atol=1e-5)


def tinygpt_params(vocab_size, context_length, d_model, num_heads, num_blocks):
    names = {"token_embedding.weight": (vocab_size, d_model), "position_embedding.weight": (context_length, d_model),
             "ln_f.weight": (d_model,), "ln_f.bias": (d_model,),
             "lm_head.weight": (vocab_size, d_model), "lm_head.bias": (vocab_size,)}
    for b in range(num_blocks):
        names.update(block_params(f"blocks.{b}.", d_model, num_heads))
    return names


@pytest.mark.points(1)
def test_tinygpt_layers(ex):
    model = ex.TinyGPT(**TINY_GPT)
    assert_param_names(model, tinygpt_params(**TINY_GPT), "TinyGPT(vocab_size=11, context_length=6, d_model=8, "
                                                          "num_heads=2, num_blocks=2)")


@pytest.mark.points(2)
def test_tinygpt_forward_shapes_and_loss(ex):
    torch.manual_seed(0)
    model = ex.TinyGPT(**TINY_GPT)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(11, (3, 4), generator=g)  # T=4 < context_length=6 must work
    targets = torch.randint(11, (3, 4), generator=g)
    logits, loss = model(idx)
    assert_tensor(logits, "logits for idx of shape (3, 4)", shape=(3, 4, 11))
    check(loss is None, f"without targets the loss should be None, got {type(loss).__name__}")
    logits, loss = model(idx, targets)
    assert_tensor(loss, "loss", shape=())
    assert_close(loss, F.cross_entropy(logits.reshape(12, 11), targets.reshape(12)),
                 "loss (mean cross-entropy of logits against targets)", atol=1e-5)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 7, dtype=torch.long))  # longer than context_length=6


@pytest.mark.points(2)
def test_tinygpt_matches_reference(ex):
    got = SNAPSHOT_CASES["ex04_model"]["tinygpt_output"](ex)
    expected = SNAPSHOT["tinygpt_output"]
    hint = " (token + position embeddings, the blocks, ln_f, lm_head; parameters set by name)"
    assert_close(got["logits"], torch.tensor(expected["logits"]), "logits of the tiny model" + hint,
                 atol=SNAPSHOT_ATOL, rtol=SNAPSHOT_RTOL)
    assert_number(got["loss"], expected["loss"], "loss of the tiny model",
                  atol=SNAPSHOT_ATOL, rtol=SNAPSHOT_RTOL)


@pytest.mark.points(2)
def test_tinygpt_loss_at_init_is_about_ln_vocab(ex):
    torch.manual_seed(0)
    model = ex.TinyGPT(vocab_size=65, context_length=16, d_model=32, num_heads=4, num_blocks=2)
    g = torch.Generator().manual_seed(1)
    idx, targets = torch.randint(65, (8, 16), generator=g), torch.randint(65, (8, 16), generator=g)
    with torch.no_grad():
        _, loss = model(idx, targets)
    expected = math.log(65)
    check(abs(loss.item() - expected) < 0.1,
          f"loss at initialisation is {loss.item():.3f}, expected about ln(65) = {expected:.3f} (within 0.1): "
          f"initialise the Linear and Embedding weights with std 0.02 and the biases with zeros")


@pytest.mark.points(1)
def test_tinygpt_is_causal(ex):
    torch.manual_seed(0)
    model = ex.TinyGPT(**TINY_GPT)
    fill_parameters(model, seed=9)
    idx = torch.randint(11, (2, 6), generator=torch.Generator().manual_seed(2))
    idx2 = idx.clone()
    idx2[:, 4] = (idx2[:, 4] + 1) % 11
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(idx2)
    for t in range(4):
        check(torch.allclose(a[:, t], b[:, t], atol=1e-5),
              f"logits at position {t} changed when only the token at position 4 changed: "
              f"the model is looking at the future")
