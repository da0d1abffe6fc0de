"""Speedrun lab: nanoGPT's baby recipe against a modern recipe, char-level tiny Shakespeare, context 64.

Research prototype for issue 10 (`--preset speedrun`): a self-contained plain re-implementation of
nanoGPT's CPU loop and of the candidate recipe (rotary, RMSNorm, QK-norm, ReLU^2, untied head, Muon
for the hidden matrices, warm-up/constant/linear-decay schedule, 450 steps), timed one after the
other in the same process, val loss over the whole held-out split. When the recipe lands in
`minigpt` as a preset, the candidate half of this script should call `minigpt` instead.

Usage:
  python speedrun_lab.py                 # reference then speedrun, same process, prints times/losses/ratio
  python speedrun_lab.py --only ref|speed
  python speedrun_lab.py --cfg '{"name":"x", ...}' --monitor 100   # one custom run, loss curve every 100 steps
Self-contained (torch only). Written from scratch for the minigpt course research.
"""
import argparse, json, math, os, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                    "tinyshakespeare.txt")  # ../shared beside the clone; never committed
CTX = 64


def load_data(path=DATA):
    text = open(path, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], len(chars)


# ----------------------------------------------------------------------------- model
class Rotary(nn.Module):
    def __init__(self, head_dim, ctx, base=10000.0):
        super().__init__()
        inv = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        t = torch.arange(ctx).float()
        f = torch.outer(t, inv)  # (T, hd/2)
        self.register_buffer("cos", f.cos(), persistent=False)
        self.register_buffer("sin", f.sin(), persistent=False)

    def forward(self, x):  # x: (B, H, T, hd)
        T = x.shape[-2]
        c, s = self.cos[:T], self.sin[:T]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)


def make_norm(kind, d, bias):
    if kind == "ln":
        return nn.LayerNorm(d, bias=bias)
    return nn.RMSNorm(d, eps=1e-6)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h = c["d"], c["heads"]
        self.h = h
        self.n1 = make_norm(c["norm"], d, c["bias"])
        self.qkv = nn.Linear(d, 3 * d, bias=c["bias"])
        self.proj = nn.Linear(d, d, bias=c["bias"])
        self.n2 = make_norm(c["norm"], d, c["bias"])
        self.ffn = c["ffn"]
        hid = c["ffn_mult"] * d
        if self.ffn == "swiglu":
            hid = int(c.get("swiglu_hidden", 0)) or (int(2 * hid / 3) // 8 * 8)  # ~ param-matched
            self.fc = nn.Linear(d, 2 * hid, bias=c["bias"])
        else:
            self.fc = nn.Linear(d, hid, bias=c["bias"])
        self.fc2 = nn.Linear(hid, d, bias=c["bias"])
        self.qknorm = c["qknorm"]
        self.rope = Rotary(d // h, CTX) if c["pos"] == "rope" else None
        self.manual_attn = c.get("attn") == "manual"
        self.register_buffer("mask", torch.ones(CTX, CTX, dtype=torch.bool).triu(1), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.n1(x)).split(C, dim=2)
        q = q.view(B, T, self.h, C // self.h).transpose(1, 2)
        k = k.view(B, T, self.h, C // self.h).transpose(1, 2)
        v = v.view(B, T, self.h, C // self.h).transpose(1, 2)
        if self.qknorm:
            q = F.rms_norm(q, (q.size(-1),))
            k = F.rms_norm(k, (k.size(-1),))
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        if self.manual_attn:  # explicit attention, for the profile comparison
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.mask[:T, :T], float("-inf")).softmax(dim=-1)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        u = self.fc(self.n2(x))
        if self.ffn == "gelu":
            u = F.gelu(u)
        elif self.ffn == "gelu_tanh":
            u = F.gelu(u, approximate="tanh")
        elif self.ffn == "relu2":
            u = F.relu(u).square()
        else:
            a, b = u.chunk(2, dim=-1)
            u = F.silu(a) * b
        return x + self.fc2(u)


class GPT(nn.Module):
    def __init__(self, c, vocab):
        super().__init__()
        self.c = c
        d = c["d"]
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(CTX, d) if c["pos"] == "learned" else None
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["layers"])])
        self.nf = make_norm(c["norm"], d, c["bias"])
        self.head = nn.Linear(d, vocab, bias=False)
        if c["tied"]:
            self.head.weight = self.wte.weight
        # nanoGPT init
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02)
        for b in self.blocks:
            nn.init.normal_(b.proj.weight, 0.0, 0.02 / math.sqrt(2 * c["layers"]))
            nn.init.normal_(b.fc2.weight, 0.0, 0.02 / math.sqrt(2 * c["layers"]))
            if c.get("zero_proj"):
                nn.init.zeros_(b.proj.weight); nn.init.zeros_(b.fc2.weight)
        if not c["tied"] and c.get("zero_head"):
            nn.init.zeros_(self.head.weight)

    def forward(self, idx, targets=None):
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.nf(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# ----------------------------------------------------------------------------- configs
BABY = dict(name="baby", layers=4, heads=4, d=128, pos="learned", norm="ln", bias=True, qknorm=False,
            ffn="gelu", ffn_mult=4, tied=True, opt="adamw", lr=1e-3, min_lr=1e-4, betas=(0.9, 0.99), wd=0.1,
            warmup=100, sched="cos", steps=2000, batch=12, clip=1.0, eval_every=250, eval_iters=20,
            nanogpt_loop=True, seed=1337)

# The speedrun recipe: rotary positions, RMSNorm (no biases), QK-norm, ReLU^2 MLP, untied head (normal 0.02 init),
# Muon (torch.optim.Muon, Nesterov momentum 0.95, 5 Newton-Schulz steps, Keller's lr scaling) for the
# 2-D matrices inside the blocks, AdamW (betas 0.9/0.95, no weight decay) for embedding, head and gains;
# warm-up 50 steps, constant, linear warm-down to 0 over the last half; 450 steps of batch 12;
# no evaluation during training (one full-split val at the end).
SPEED = dict(BABY, name="speed", pos="rope", norm="rms", bias=False, qknorm=True, ffn="relu2", tied=False,
             opt="muon", muon_lr=0.02, muon_wd=0.0, muon_mom=0.95, ns_steps=5,
             emb_lr=0.01, scalar_lr=0.01, head_lr=0.004, adam_betas=(0.9, 0.95),
             sched="wsd", warmup=50, cooldown=0.5, final_frac=0.0, steps=450, batch=12, clip=1.0,
             eval_every=0, nanogpt_loop=False)
SPEED.update(json.loads(os.environ.get("SPEED_CFG", "{}")))


# ----------------------------------------------------------------------------- training
def lr_factor(c, it):
    """Returns the multiplier on the base lr at iteration it."""
    if c["sched"] == "cos":  # nanoGPT get_lr, expressed relative to lr
        lr, mn, w, T = c["lr"], c["min_lr"], c["warmup"], c["steps"]
        if it < w:
            return (it + 1) / (w + 1)
        if it > T:
            return mn / lr
        r = (it - w) / (T - w)
        return (mn + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - mn)) / lr
    # "wsd": linear warm-up, constant, linear warm-down to final_frac over the last `cooldown` fraction
    w, T, cd = c["warmup"], c["steps"], c.get("cooldown", 0.5)
    if it < w:
        return (it + 1) / w
    start = T * (1 - cd)
    if it < start:
        return 1.0
    fr = c.get("final_frac", 0.0)
    return 1.0 - (1.0 - fr) * (it - start) / max(1, T - start)


def make_optim(c, model):
    params = [p for p in model.parameters() if p.requires_grad]
    if c["opt"] == "adamw":
        decay = [p for p in params if p.dim() >= 2]
        nod = [p for p in params if p.dim() < 2]
        groups = [dict(params=decay, weight_decay=c["wd"]), dict(params=nod, weight_decay=0.0)]
        o = torch.optim.AdamW(groups, lr=c["lr"], betas=c["betas"], foreach=c.get("foreach", None),
                              fused=c.get("fused", None))
        for g in o.param_groups:
            g["base_lr"] = c["lr"]
        return [o]
    # muon for hidden 2-D matrices, AdamW for embeddings, head, gains/biases
    hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("blocks.")]
    hid_ids = {id(p) for p in hidden}
    emb = [model.wte.weight] + ([model.wpe.weight] if model.wpe is not None else [])
    head = [] if c["tied"] else [model.head.weight]
    rest = [p for p in params if id(p) not in hid_ids and all(p is not q for q in emb + head)]
    m = torch.optim.Muon(hidden, lr=c["muon_lr"], weight_decay=c.get("muon_wd", 0.0),
                         momentum=c.get("muon_mom", 0.95), adjust_lr_fn=c.get("muon_adjust", None),
                         ns_steps=c.get("ns_steps", 5))
    for g in m.param_groups:
        g["base_lr"] = c["muon_lr"]
    ag = [dict(params=emb, lr=c["emb_lr"], base_lr=c["emb_lr"], weight_decay=0.0),
          dict(params=rest, lr=c["scalar_lr"], base_lr=c["scalar_lr"], weight_decay=0.0)]
    if head:
        ag.append(dict(params=head, lr=c["head_lr"], base_lr=c["head_lr"], weight_decay=0.0))
    a = torch.optim.AdamW(ag, betas=c.get("adam_betas", (0.9, 0.95)), eps=1e-8, fused=c.get("fused", None))
    return [m, a]


@torch.no_grad()
def full_val_loss(model, val, bs=256):
    """Mean cross-entropy over the whole val split, non-overlapping windows of CTX (every target once)."""
    model.eval()
    n = (len(val) - 1) // CTX
    x = val[: n * CTX].view(n, CTX)
    y = val[1: n * CTX + 1].view(n, CTX)
    tot, cnt = 0.0, 0
    for i in range(0, n, bs):
        xb, yb = x[i:i + bs], y[i:i + bs]
        logits = model(xb)
        tot += F.cross_entropy(logits.view(-1, logits.size(-1)), yb.reshape(-1), reduction="sum").item()
        cnt += yb.numel()
    rem = len(val) - 1 - n * CTX  # tail
    if rem > 0:
        xb = val[n * CTX: n * CTX + rem].view(1, -1)
        yb = val[n * CTX + 1: n * CTX + 1 + rem].view(1, -1)
        tot += F.cross_entropy(model(xb).view(-1, model.head.out_features), yb.view(-1),
                               reduction="sum").item()
        cnt += rem
    model.train()
    return tot / cnt


def get_batch(data, B, gen):
    ix = torch.randint(len(data) - CTX, (B,), generator=gen)
    x = torch.stack([data[i:i + CTX] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + CTX] for i in ix])
    return x, y


@torch.no_grad()
def estimate_loss(model, train, val, B, iters, gen):  # nanoGPT's estimate_loss
    out = {}
    model.eval()
    for name, d in (("train", train), ("val", val)):
        ls = torch.zeros(iters)
        for k in range(iters):
            x, y = get_batch(d, B, gen)
            ls[k] = model(x, y).item()
        out[name] = ls.mean().item()
    model.train()
    return out


def train(c, train_data, val_data, vocab, monitor=0, monitor_windows=400, verbose=True, target=1.886):
    """Trains config c. Wall time counts everything nanoGPT would (in-training evals included);
    the optional `monitor` curve (full/partial val every `monitor` steps) is excluded from the clock."""
    torch.manual_seed(c["seed"])
    gen = torch.Generator().manual_seed(c["seed"])
    model = GPT(c, vocab)
    opts = make_optim(c, model)
    B, T = c["batch"], c["steps"]
    curve, excluded = [], 0.0
    mval = val_data[: monitor_windows * CTX + 1] if monitor_windows else val_data
    t0 = time.perf_counter()
    nsteps = T + 1 if c.get("nanogpt_loop") else T  # nanoGPT runs iter 0..max_iters inclusive
    for it in range(nsteps):
        f = lr_factor(c, it)
        for o in opts:
            for g in o.param_groups:
                g["lr"] = g["base_lr"] * f
        ev = c.get("eval_every", 0)
        if ev and (it % ev == 0 or it == nsteps - 1 and c.get("eval_last")):
            l = estimate_loss(model, train_data, val_data, B, c["eval_iters"], gen)
            if verbose:
                print(f"  [{c['name']}] step {it} train {l['train']:.4f} val {l['val']:.4f} "
                      f"t {time.perf_counter() - t0 - excluded:.1f}s", flush=True)
        if monitor and it % monitor == 0 and it > 0:
            tm = time.perf_counter()
            v = full_val_loss(model, mval)
            excluded += time.perf_counter() - tm
            curve.append((it, round(v, 4), round(time.perf_counter() - t0 - excluded, 2)))
            if verbose:
                print(f"  [{c['name']}] monitor step {it} val {v:.4f} t {curve[-1][2]:.1f}s", flush=True)
        x, y = get_batch(train_data, B, gen)
        loss = model(x, y)
        if c.get("nanogpt_loop"):
            lossf = loss.item()  # nanoGPT's log_interval=1 reads the loss every step
        loss.backward()
        if c["clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip"])
        for o in opts:
            o.step()
        for o in opts:
            o.zero_grad(set_to_none=True)
    wall = time.perf_counter() - t0 - excluded
    tv = time.perf_counter()
    v = full_val_loss(model, val_data)
    tval = time.perf_counter() - tv
    if monitor:
        curve.append((T, round(v, 4), round(wall, 2)))
    return dict(name=c["name"], wall=wall, val=v, val_eval_s=tval, curve=curve, steps=T,
                params=sum(p.numel() for p in model.parameters()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cfg", default="")
    ap.add_argument("--monitor", type=int, default=0)
    ap.add_argument("--monitor_windows", type=int, default=400)
    ap.add_argument("--out", default="")
    ap.add_argument("--data", default=DATA, help="char-rnn's tiny Shakespeare")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tr, va, V = load_data(a.data)
    if a.cfg:
        c = dict(BABY)
        c.update(json.loads(a.cfg))
        r = train(c, tr, va, V, monitor=a.monitor, monitor_windows=a.monitor_windows)
        print("RESULT", json.dumps(r), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(dict(cfg=c, **r)) + "\n")
        return
    res = []
    for c in ([BABY] if a.only != "speed" else []) + ([SPEED] if a.only != "ref" else []):
        print(f"== {c['name']}: {json.dumps(c)}", flush=True)
        r = train(c, tr, va, V)
        print(f"== {c['name']}: wall {r['wall']:.1f}s (+{r['val_eval_s']:.1f}s full-val eval) "
              f"val(full split) {r['val']:.4f} params {r['params']}", flush=True)
        res.append(r)
    if len(res) == 2:
        print(f"ratio speed/ref wall = {res[1]['wall'] / res[0]['wall']:.3f}   "
              f"(incl. final full-val eval: {(res[1]['wall'] + res[1]['val_eval_s']) / (res[0]['wall'] + res[0]['val_eval_s']):.3f})"
              f"  ref val {res[0]['val']:.4f}  speed val {res[1]['val']:.4f}  target <=1.886 & ratio <=0.5")


if __name__ == "__main__":
    main()
