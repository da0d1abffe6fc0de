"""Train chapter 5's model once and keep its attention weights on one line: ch03_attention_maps.json.

Chapter 3 compares an untrained attention layer with trained ones. Heads only specialise after a
real training run (about a minute on a quiet 2-core CPU, several on a busy one), too long for a
notebook that nbval runs and too early for a learner who has not met training yet. So this script
trains chapter 5's model with chapter 5's settings, runs one line of the validation text through
it, and writes every block's (num_heads, T, T) weights; chapter 3 loads the committed JSON.

    .venv/bin/python chapters/runs/make_ch03_maps.py        # from the repository root
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from minigpt import GPT, CharTokenizer, GPTConfig, TrainConfig, Trainer, encode_corpus, shakespeare, train_val_split

OUT = Path(__file__).resolve().parent / "ch03_attention_maps.json"
LINE = "The greater man, the greater is the thing,"  # from the validation part of the corpus
MODEL = dict(context_length=64, d_model=128, num_heads=4, num_blocks=4)  # chapter 5's GPTConfig
TRAIN = dict(batch_size=12, max_iters=1250, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
             grad_clip=1.0, eval_interval=250, eval_iters=20, seed=1337, device="cpu")  # chapter 5's


def attention_maps(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    """Each block's attention weights for one sequence (1, T): (num_blocks, num_heads, T, T)."""
    model.eval()
    with torch.no_grad():
        x = model.token_embedding(ids) + model.position_embedding(torch.arange(ids.size(1)))
        maps = []
        for block in model.blocks:
            maps.append(block.attn.attention_weights(block.ln1(x))[0])  # what the block's heads see
            x = block(x)
    return torch.stack(maps)


def main() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    text = shakespeare()
    tokenizer = CharTokenizer.train(text)
    train, val = train_val_split(encode_corpus(text, tokenizer))
    if LINE not in text[int(0.9 * len(text)):]:
        raise SystemExit(f"{LINE!r} is not in the validation part of the corpus")
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **MODEL))
    start = time.perf_counter()
    result = Trainer(model, tokenizer, train, val, TrainConfig(**TRAIN), progress=False).run()
    print(f"trained {TRAIN['max_iters']} steps in {time.perf_counter() - start:.0f} s, "
          f"val loss {result.history[-1]['val']:.3f}")
    ids = torch.tensor([tokenizer.encode(LINE)])
    maps = attention_maps(model, ids)
    record = {"what": "chapter 3: attention weights of chapter 5's trained model on one validation line",
              "made_by": "chapters/runs/make_ch03_maps.py", "line": LINE,
              "tokens": [tokenizer.decode([i]) for i in ids[0].tolist()],
              "model": MODEL, "train": TRAIN, "val_loss": result.history[-1]["val"],
              "torch": torch.__version__,
              "maps": [[[[round(w, 5) for w in row] for row in head] for head in block]
                       for block in maps.tolist()]}  # (num_blocks, num_heads, T, T)
    OUT.write_text(json.dumps(record) + "\n", encoding="utf-8")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
