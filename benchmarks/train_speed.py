"""Training speed and quality at nanoGPT's CPU "baby GPT" configuration. Prints figures; asserts nothing.

    python benchmarks/train_speed.py                      # built-in Shakespeare corpus
    python benchmarks/train_speed.py --data ../shared/data/tinyshakespeare.txt   # nanoGPT's data

Configuration (nanoGPT README, CPU): character-level, 4 blocks, 4 heads, d_model 128, context 64,
batch 12, dropout 0, learning rate 1e-3 (min 1e-4, 100 warm-up steps), 2000 iterations.

Speed: the same steps are timed for minigpt's `Trainer` and for a plain PyTorch loop in the same
process (explicit attention, AdamW with its default implementation), interleaved in rounds so
that a noisy machine hurts both alike; medians are quoted and compared as a ratio. Model FLOP
utilisation (MFU) is measured against a float32 1024x1024 matmul timed in the same run.
Quality: a full 2000-step `Trainer` run, its final val loss and wall time.
Profile (--profile): where the time of a `Trainer` step goes (torch.profiler, self CPU time
grouped into matrix multiplies, the attention kernel, activations and norms, the optimizer, the
rest), so the MFU figure can be read: only the matrix multiplies count as model FLOPs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from minigpt import GPT, GPTConfig, TrainConfig, Trainer, encode_corpus, load_text, train_val_split
from minigpt.data import get_batch
from minigpt.tokenizers import CharTokenizer

BABY = dict(context_length=64, d_model=128, num_heads=4, num_blocks=4, dropout=0.0)
TRAIN = dict(batch_size=12, max_iters=2000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
             eval_interval=250, eval_iters=20, device="cpu", seed=1337)


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Best-of float32 matmul throughput on this machine, the ceiling for MFU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def flops_per_iteration(model: GPT, batch_size: int) -> float:
    """Forward + backward FLOPs: 6 per parameter per token, plus attention's T x T products."""
    c = model.config
    n = model.num_parameters(include_embeddings=False)
    per_token = 6 * n + 12 * c.num_blocks * c.d_model * c.context_length
    return per_token * batch_size * c.context_length


def plain_step_fn(model: GPT, train_data: torch.Tensor, generator: torch.Generator):
    """The straightforward loop a learner writes first: explicit attention, default AdamW."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)

    def step() -> float:
        x, y = get_batch(train_data, TRAIN["batch_size"], BABY["context_length"], generator=generator)
        logits, _ = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return step


def time_steps(step, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def speed(train_data, val_data, tokenizer, vocab_size: int, rounds: int, steps: int) -> None:
    config = GPTConfig(vocab_size=vocab_size, **BABY)
    torch.manual_seed(0)
    trainer = Trainer(GPT(config), tokenizer, train_data, val_data,
                      TrainConfig(**TRAIN), progress=False)
    torch.manual_seed(0)
    plain_model = GPT(config, fused=False)
    plain = plain_step_fn(plain_model, train_data, torch.Generator().manual_seed(0))
    ours = trainer.train_step
    time_steps(ours, 10), time_steps(plain, 10)  # warm up allocators and kernels
    ours_t, plain_t = [], []
    for _ in range(rounds):
        ours_t += time_steps(ours, steps)
        plain_t += time_steps(plain, steps)
    ms_ours, ms_plain = 1e3 * statistics.median(ours_t), 1e3 * statistics.median(plain_t)
    tokens = TRAIN["batch_size"] * BABY["context_length"]
    peak = matmul_gflops()
    flops = flops_per_iteration(trainer.model, TRAIN["batch_size"])
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"model: {trainer.model.num_parameters():,} parameters")
    print(f"float32 1024x1024 matmul: {peak:.0f} GFLOP/s")
    for name, ms in (("minigpt Trainer", ms_ours), ("plain PyTorch loop", ms_plain)):
        mfu = flops / (ms / 1e3) / (peak * 1e9)
        print(f"{name:>20}: median {ms:6.1f} ms/iter, {tokens / ms * 1e3:8,.0f} tokens/s, MFU {mfu:5.1%}")
    print(f"speed-up over the plain loop: {ms_plain / ms_ours:.2f}x "
          f"({rounds} rounds of {steps} steps each, interleaved)")


# torch.profiler op names -> the part of the step they belong to (first match wins: the
# optimizer's and clipping's _foreach_mul_/_foreach_pow_ must not count as activations)
PROFILE_PARTS = (("matrix multiplies", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")),
                 ("attention kernel", ("scaled_dot_product", "flash_attention")),
                 ("optimizer and clipping", ("Optimizer.", "adamw", "_foreach", "vector_norm")),
                 ("activations and norms", ("gelu", "layer_norm", "rms_norm", "relu", "silu",
                                            "softmax", "pow", "mul")))


def profile(train_data, val_data, tokenizer, vocab_size: int, steps: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    trainer = Trainer(GPT(GPTConfig(vocab_size=vocab_size, **BABY)), tokenizer, train_data,
                      val_data, TrainConfig(**TRAIN), progress=False)
    time_steps(trainer.train_step, 5)  # warm up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        time_steps(trainer.train_step, steps)
    parts: dict[str, float] = {}
    rest: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key
        part = next((p for p, keys in PROFILE_PARTS if any(k in name for k in keys)), "the rest")
        parts[part] = parts.get(part, 0.0) + event.self_cpu_time_total
        if part == "the rest":
            rest[name] = event.self_cpu_time_total
    total = sum(parts.values())
    print(f"profile of {steps} Trainer steps ({total / steps / 1e3:.1f} ms/step under the profiler, "
          f"self CPU time):")
    for part, value in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {part:>24}: {value / total:6.1%}")
    biggest = sorted(rest.items(), key=lambda kv: -kv[1])[:5]
    print("  the rest, largest: " + ", ".join(f"{n} {v / total:.1%}" for n, v in biggest))


def quality(train_data, val_data, tokenizer, vocab_size: int) -> None:
    torch.manual_seed(TRAIN["seed"])
    model = GPT(GPTConfig(vocab_size=vocab_size, **BABY))
    trainer = Trainer(model, tokenizer, train_data, val_data, TrainConfig(**TRAIN), progress=False)
    start = time.perf_counter()
    result = trainer.run()
    wall = time.perf_counter() - start
    last = result.history[-1]
    print(f"quality: 2000 iterations in {wall:.1f} s (evaluations included): "
          f"train loss {last['train']:.4f}, val loss {last['val']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="shakespeare", help="'shakespeare' or a text file")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=40, help="steps per round and contender")
    parser.add_argument("--skip-quality", action="store_true", help="only the speed comparison")
    parser.add_argument("--profile", action="store_true", help="also where a step's time goes")
    args = parser.parse_args()
    text = load_text(args.data)
    tokenizer = CharTokenizer.train(text)
    train_data, val_data = train_val_split(encode_corpus(text, tokenizer))
    print(f"data: {args.data}, {len(text):,} characters, vocabulary {tokenizer.vocab_size}")
    speed(train_data, val_data, tokenizer, tokenizer.vocab_size, args.rounds, args.steps)
    if not args.skip_quality:
        quality(train_data, val_data, tokenizer, tokenizer.vocab_size)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS of this process): {peak_mb:.0f} MB")
    if args.profile:  # after the memory figure: the profiler's records take memory too
        profile(train_data, val_data, tokenizer, tokenizer.vocab_size, args.steps)


if __name__ == "__main__":
    main()
