"""Typical wrong answers, each a small text patch of a solution file.

``tests/test_grader.py`` copies ``solutions/`` to a temporary folder, applies
one mutant's replacements (each ``old`` must occur exactly once in the file),
grades that folder with the mutant's grader file and expects at least one
real failure (not a "not implemented yet"). A mutant every grader test lets
through means the graders have a blind spot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # e.g. "ex02_batching.py"; graded by exercises/test_<file>
    replacements: tuple[tuple[str, str], ...]
    mistake: str  # what a learner would have done


MUTANTS: tuple[Mutant, ...] = (
    Mutant("pair_tie_goes_to_last", "ex01_tokenization.py",
           (("return max(counts, key=counts.__getitem__)",
             "return max(reversed(list(counts)), key=counts.__getitem__)"),),
           "most_frequent_pair breaks ties in favour of the pair seen last"),
    Mutant("merge_does_not_skip", "ex01_tokenization.py",
           (("            out.append(new_id)\n            i += 2", "            out.append(new_id)\n            i += 1"),),
           "merge moves on by one after a merge, so the second id is kept too"),
    Mutant("y_not_shifted", "ex02_batching.py",
           (("y = torch.stack([data[s + 1 : s + context_length + 1] for s in starts.tolist()])",
             "y = torch.stack([data[s : s + context_length] for s in starts.tolist()])"),),
           "off-by-one: y is the same window as x instead of x shifted by one"),
    Mutant("last_start_unreachable", "ex02_batching.py",
           (("starts = torch.randint(len(data) - context_length, (batch_size,)",
             "starts = torch.randint(len(data) - context_length - 1, (batch_size,)"),),
           "get_batch never draws the last possible start index"),
    Mutant("sequential_drops_last_window", "ex02_batching.py",
           (("starts = list(range(0, len(data) - context_length, context_length))",
             "starts = list(range(0, len(data) - context_length - 1, context_length))"),),
           "sequential_batches stops one window early"),
    Mutant("split_takes_val_first", "ex02_batching.py",
           (("return data[:n_train], data[n_train:]", "return data[len(data) - n_train:], data[:len(data) - n_train]"),),
           "train_val_split keeps the start of the data for validation"),
    Mutant("mask_ignored", "ex03_attention.py",
           (('scores = scores.masked_fill(~mask, float("-inf"))', "scores = scores"),),
           "the causal mask is never applied"),
    Mutant("mask_reversed", "ex03_attention.py",
           (("return torch.tril(torch.ones(T, T, dtype=torch.bool))",
             "return torch.triu(torch.ones(T, T, dtype=torch.bool))"),),
           "the mask lets positions see the future instead of the past"),
    Mutant("no_sqrt_scaling", "ex03_attention.py",
           (("scores = q @ k.transpose(-2, -1) / math.sqrt(head_size)", "scores = q @ k.transpose(-2, -1)"),),
           "scores not divided by sqrt(head_size)"),
    Mutant("softmax_wrong_axis", "ex03_attention.py",
           (("weights = torch.softmax(scores, dim=-1)", "weights = torch.softmax(scores, dim=-2)"),),
           "softmax over the queries instead of the keys"),
    Mutant("heads_concatenated_on_wrong_dim", "ex03_attention.py",
           (("out = torch.cat([head(x) for head in self.heads], dim=-1)",
             "out = torch.cat([head(x) for head in self.heads], dim=1)"),),
           "multi-head outputs concatenated along time instead of features"),
    Mutant("missing_attention_residual", "ex04_model.py",
           (("x = x + self.attn(self.ln1(x))", "x = self.attn(self.ln1(x))"),),
           "the block forgets the residual connection around attention"),
    Mutant("post_layernorm", "ex04_model.py",
           (("x = x + self.ffwd(self.ln2(x))", "x = self.ln2(x + self.ffwd(x))"),),
           "LayerNorm after the residual sum instead of before the sub-layer"),
    Mutant("relu_instead_of_gelu", "ex04_model.py",
           (("self.act = nn.GELU()", "self.act = nn.ReLU()"),),
           "feed-forward uses ReLU instead of GELU"),
    Mutant("no_position_embedding", "ex04_model.py",
           (("x = self.token_embedding(idx) + self.position_embedding(positions)", "x = self.token_embedding(idx)"),),
           "position embeddings created but never added"),
    Mutant("default_init", "ex04_model.py",
           (("self.apply(self._init_weights)", "pass"),),
           "PyTorch's default initialisation: the first loss is well above ln(vocab_size)"),
    Mutant("cross_entropy_unstable", "ex05_training.py",
           (("row_max = logits.max(dim=-1, keepdim=True).values.detach()",
             "row_max = torch.zeros_like(logits[:, :1])"),),
           "cross-entropy without subtracting the maximum: overflows for large logits"),
    Mutant("gradients_never_zeroed", "ex05_training.py",
           (("    optimizer.zero_grad(set_to_none=True)\n", ""),),
           "train_step never clears the old gradients"),
    Mutant("warmup_off_by_one", "ex05_training.py",
           (("return max_lr * (step + 1) / warmup_iters", "return max_lr * step / warmup_iters"),),
           "warm-up starts at 0 and reaches max_lr one step late"),
    Mutant("eval_mode_not_restored", "ex05_training.py",
           (("model.train(was_training)", "pass"),),
           "estimate_loss leaves the model in eval mode"),
    Mutant("estimate_loss_builds_graph", "ex05_training.py",
           (("with torch.no_grad():", "with torch.enable_grad():"),),
           "estimate_loss runs with gradients enabled"),
    Mutant("best_step_on_train_loss", "ex06_evaluation.py",
           (('best = min(history, key=lambda record: record["val"])',
             'best = min(history, key=lambda record: record["train"])'),),
           "best_step looks at the training loss"),
    Mutant("bits_without_ln2", "ex06_evaluation.py",
           (("/ (num_chars * math.log(2))", "/ num_chars"),),
           "bits per character left in nats (no division by ln 2)"),
    Mutant("top_p_one_too_few", "ex07_sampling.py",
           (("mass_before = torch.cumsum(probs, dim=-1) - probs", "mass_before = torch.cumsum(probs, dim=-1)"),),
           "top-p drops the token that makes the total reach p"),
    Mutant("top_k_keeps_k_minus_one", "ex07_sampling.py",
           (("logits.masked_fill(logits < kth_largest", "logits.masked_fill(logits <= kth_largest"),),
           "top-k removes the k-th largest too, keeping k - 1"),
    Mutant("temperature_after_softmax", "ex07_sampling.py",
           (("            logits = apply_temperature(logits, temperature)\n", ""),
            ("probs = torch.softmax(logits, dim=-1)\n", "probs = torch.softmax(logits, dim=-1) / temperature\n")),
           "temperature applied to the probabilities, where it has no effect"),
    Mutant("context_not_cropped", "ex07_sampling.py",
           (("logits, _ = model(idx[:, -context_length:])", "logits, _ = model(idx)"),),
           "generate feeds the whole sequence, longer than context_length"),
)
