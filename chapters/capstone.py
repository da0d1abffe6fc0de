"""Stand-ins for the capstone's pieces (chapter 7, section 11), with the exercises' signatures.

The capstone trains your GPT with your own pieces: ``pick(module, name, fallback)`` (from
``tryit``) takes yours when it is written and the fallback when it is not, so the section always
runs. Most fallbacks are ``minigpt``'s own functions (``minigpt.get_batch``,
``minigpt.learning_rate``, ``minigpt.estimate_loss``); the ones below stand in where ``minigpt``
has no function of that name or signature: its ``GPT`` behind ``TinyGPT``'s arguments, PyTorch's
cross-entropy, the four lines of a training step, and a plain sampling loop over ``minigpt``'s
top-k filter (``minigpt.generate`` drives only ``minigpt``'s own model).

``build_model`` and ``guarded`` handle a piece of yours that calls an earlier piece you have not
written yet (your ``TinyGPT`` built on a chapter 3 stub, say): they say so in one line and use the
stand-in instead.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt import GPT, GPTConfig
from minigpt.sampling import top_k_filter


def tiny_gpt(vocab_size: int, context_length: int, d_model: int, num_heads: int,
             num_blocks: int) -> GPT:
    """``minigpt``'s GPT with TinyGPT's layout: learned positions, LayerNorm, GELU, no dropout, untied head."""
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=context_length, d_model=d_model,
                         num_heads=num_heads, num_blocks=num_blocks, dropout=0.0, tie_weights=False))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """PyTorch's mean cross-entropy: logits (N, V), targets (N,) -> a scalar tensor."""
    return F.cross_entropy(logits, targets)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """One step as ``minigpt``'s Trainer takes it: fresh gradients, forward, backward, update; the loss."""
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_length: int,
             temperature: float = 1.0, top_k: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The plain sampling loop for any ``model(idx) -> (logits, loss)``, with ``minigpt``'s top-k filter."""
    for _ in range(max_new_tokens):
        logits = model(idx[:, -context_length:])[0][:, -1, :]  # (B, V)
        if temperature == 0:
            token = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        else:
            logits = logits / temperature
            logits = top_k_filter(logits, top_k) if top_k is not None else logits
            token = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, token], dim=1)
    return idx


def _stub(error: NotImplementedError) -> str:
    """The function that raised, and its file: ``forward (ex03_attention.py)``."""
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return f"{frame.name} in {Path(frame.filename).name} raises NotImplementedError"


def build_model(make: Callable[..., nn.Module], vocab_size: int, settings: dict[str, int],
                seed: int) -> nn.Module:
    """``make(vocab_size, **settings)`` seeded, checked on one token; ``tiny_gpt`` if it needs a piece not written yet."""
    torch.manual_seed(seed)
    try:
        model = make(vocab_size, **settings)
        out = model(torch.zeros(1, 1, dtype=torch.long))  # your TinyGPT runs your chapter 3 and 4 pieces
        if _is_logits_and_loss(out, vocab_size):
            return model
        print(f"TinyGPT: yours returned {type(out).__name__} for a (1, 1) input where "
              f"(logits (1, 1, {vocab_size}), loss) was expected: using minigpt's GPT")
    except NotImplementedError as error:
        print(f"TinyGPT: yours needs a piece not written yet ({_stub(error)}): "
              f"using minigpt's GPT")
    except Exception as error:  # the learner's own bug: one line, and the capstone goes on
        print(f"TinyGPT: yours raised {type(error).__name__}: {error}: using minigpt's GPT")
    torch.manual_seed(seed)
    return tiny_gpt(vocab_size, **settings)


def _is_logits_and_loss(out: Any, vocab_size: int) -> bool:
    """A forward's result has the course's form: ``(logits (1, 1, vocab_size), loss)``."""
    return (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor)
            and tuple(out[0].shape) == (1, 1, vocab_size))


def guarded(name: str, yours: Callable[..., Any], fallback: Callable[..., Any]) -> Callable[..., Any]:
    """``yours``, until it reaches a piece not written yet (NotImplementedError): then ``fallback``, said once."""
    if yours is fallback:
        return fallback
    use = [yours]

    def call(*args: Any, **kwargs: Any) -> Any:
        if use[0] is yours:
            try:
                return yours(*args, **kwargs)
            except NotImplementedError as error:
                print(f"{name}: yours calls a piece not written yet ({_stub(error)}): "
                      f"using minigpt's from here on")
                use[0] = fallback
        return fallback(*args, **kwargs)

    return call
