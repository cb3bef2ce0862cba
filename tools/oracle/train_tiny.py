"""Train the embedded model `models/tiny-brown` on the Brown corpus (seeded, one H100, minutes).

    node scripts/prepare-brown.mjs .data/brown --excerpt models/tiny-brown/heldout-excerpt.txt
    python3 tools/oracle/train_tiny.py --data .data/brown --out models/tiny-brown

Steps: (1) byte-level BPE tokenizer trained on train.txt only; (2) parity check of the training
forward against the oracle (float64, CPU, random weights); (3) AdamW training in float32 (TF32
matmuls) on random 256-token windows of the training stream; the checkpoint with the lowest
validation loss (valid.txt: held-out paragraphs outside the excerpt) is kept; (4) the kept
weights are rounded to bf16, saved in HF layout with official tensor names, and the ORACLE
(float64, `default` semantics) scores the committed excerpt: heldout-ppl.json.

The training forward reuses the oracle's building blocks (rms, RoPE, slopes, layer plan) and
differs only in form, not math: lightning attention as one masked decay matrix per sequence
(o_t = sum_{j<=t} exp(-s(t-j)) (q_t.k_j) v_j, exactly the recurrence from a zero state), MLA as
batched causal softmax, MoE computing every expert densely and mixing with the top-k weights
(zero for unselected experts). Routing is the non-differentiable grouped top-k of
sigmoid(logits) + expert_bias; the bias is updated aux-loss-free (bias += u·sign(mean load -
load) after each step), gradients reach the router through the selected sigmoid weights.

Perplexity windowing (the same as `bailing perplexity`): the excerpt is tokenized once; windows
[0,W), [W,2W), ... each run from an empty cache; in each window every token from the second on
is scored given the earlier tokens of its window. ppl = exp(-mean log p).

`--tokenizer-only` runs step (1) without torch.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SPECIALS = ["<|endoftext|>", "<role>", "</role>", "<|role_end|>", "<think>", "</think>"]
NOT_SPECIAL = {"<think>", "</think>"}
EOT, ROLE_END = 0, 3  # ids of <|endoftext|> and <|role_end|> (specials come first)
WINDOW = 256

CONFIG = {
    "architectures": ["BailingMoeV2_5ForCausalLM"],
    "model_type": "bailing_hybrid",
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "head_dim": 64,
    "layer_group_size": 3,
    "group_norm_size": 2,
    "first_k_dense_replace": 1,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "n_group": 4,
    "topk_group": 2,
    "routed_scaling_factor": 2.5,
    "score_function": "sigmoid",
    "moe_router_enable_expert_bias": True,
    "norm_topk_prob": True,
    "moe_intermediate_size": 48,
    "moe_shared_expert_intermediate_size": 48,
    "num_shared_experts": 1,
    "router_dtype": "fp32",
    "rms_norm_eps": 1e-6,
    "use_qk_norm": True,
    "linear_silu": False,
    "linear_rope": True,
    "rope_theta": 10000,
    "partial_rotary_factor": 0.5,
    "max_position_embeddings": 4096,
    "q_lora_rank": 96,
    "kv_lora_rank": 64,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 32,
    "v_head_dim": 64,
    "use_bias": False,
    "use_qkv_bias": False,
    "tie_word_embeddings": False,
    "num_nextn_predict_layers": 0,
    "eos_token_id": ROLE_END,
    "pad_token_id": EOT,
    "torch_dtype": "bfloat16",
}


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

def train_tokenizer(train_docs: list[str], out: str, template_config: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=CONFIG["vocab_size"], min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train_docs, trainer)
    assert tok.get_vocab_size() == CONFIG["vocab_size"], tok.get_vocab_size()
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    data = json.loads(tok.to_str())
    for t in data["added_tokens"]:  # <think> stays visible after skip_special_tokens (as tiny-random)
        t["special"] = t["content"] not in NOT_SPECIAL
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    # tokenizer_config.json: the chat template and specials of src/tokenizer/make-byte-tokenizer.ts
    cfg = json.loads(read(template_config))
    assert "<role>HUMAN</role>" in cfg["chat_template"]
    write_json(os.path.join(out, "tokenizer_config.json"), cfg)
    write_json(os.path.join(out, "generation_config.json"), {"eos_token_id": [ROLE_END, EOT], "pad_token_id": EOT})
    return Tokenizer.from_file(os.path.join(out, "tokenizer.json"))


# ----------------------------------------------------------------------------------------------
# Training model (same math as oracle.py, batched, differentiable)
# ----------------------------------------------------------------------------------------------

def build(c, plan, torch, nn):
    """Parameters by official name (experts stacked [E, ...] here, split when saving)."""
    C, H, D, V = c.hidden, c.heads, c.head_dim, c.vocab
    E, F, Fs, Fd = c.n_experts, c.moe_ffn, int(c.raw["moe_shared_expert_intermediate_size"]), int(c.raw["intermediate_size"])
    p: dict[str, tuple] = {}  # name -> (shape, init std or 'one')
    out_std = 0.02 / math.sqrt(2 * c.layers)
    p["model.word_embeddings.weight"] = ((V, C), 0.02)
    for i, (mk, fk) in enumerate(plan):
        a = f"model.layers.{i}."
        p[a + "input_layernorm.weight"] = ((C,), "one")
        p[a + "post_attention_layernorm.weight"] = ((C,), "one")
        if mk == "lightning":
            p[a + "attention.query_key_value.weight"] = ((3 * H * D, C), 0.02)
            p[a + "attention.query_layernorm.weight"] = ((D,), "one")
            p[a + "attention.key_layernorm.weight"] = ((D,), "one")
            p[a + "attention.g_proj.weight"] = ((H * D, C), 0.02)
            p[a + "attention.g_norm.weight"] = ((H * D,), "one")
            p[a + "attention.dense.weight"] = ((C, H * D), out_std)
        else:
            p[a + "attention.q_a_proj.weight"] = ((c.q_lora, C), 0.02)
            p[a + "attention.q_a_layernorm.weight"] = ((c.q_lora,), "one")
            p[a + "attention.q_b_proj.weight"] = ((H * (c.nope + c.rope), c.q_lora), 0.02)
            p[a + "attention.kv_a_proj_with_mqa.weight"] = ((c.kv_lora + c.rope, C), 0.02)
            p[a + "attention.kv_a_layernorm.weight"] = ((c.kv_lora,), "one")
            p[a + "attention.kv_b_proj.weight"] = ((H * (c.nope + c.vdim), c.kv_lora), 0.02)
            p[a + "attention.dense.weight"] = ((C, H * c.vdim), out_std)
        m = a + "mlp."
        if fk == "dense":
            p[m + "gate_proj.weight"] = ((Fd, C), 0.02)
            p[m + "up_proj.weight"] = ((Fd, C), 0.02)
            p[m + "down_proj.weight"] = ((C, Fd), out_std)
        else:
            p[m + "gate.weight"] = ((E, C), 0.02)
            p[m + "experts.gate_proj"] = ((E, F, C), 0.02)
            p[m + "experts.up_proj"] = ((E, F, C), 0.02)
            p[m + "experts.down_proj"] = ((E, C, F), out_std)
            p[m + "shared_experts.gate_proj.weight"] = ((Fs, C), 0.02)
            p[m + "shared_experts.up_proj.weight"] = ((Fs, C), 0.02)
            p[m + "shared_experts.down_proj.weight"] = ((C, Fs), out_std)
    p["model.norm.weight"] = ((C,), "one")
    p["lm_head.weight"] = ((V, C), 0.02)
    params = {}
    for name, (shape, init) in p.items():
        t = torch.ones(shape) if init == "one" else torch.randn(shape) * init
        params[name] = nn.Parameter(t)
    return params


class Trainable:
    def __init__(self, c, plan, sem, O, torch, params, biases, device, dtype):
        self.c, self.plan, self.O, self.torch = c, plan, O, torch
        self.P = params
        self.bias = biases  # moe layer -> [E] (not a parameter)
        self.device, self.dtype = device, dtype
        self.lin_freq = torch.tensor(O.inv_freq(c.rope_theta, int(c.head_dim * c.prf), c.pos_scale), dtype=dtype, device=device)
        self.mla_freq = torch.tensor(O.inv_freq(c.rope_theta, c.rope, c.pos_scale), dtype=dtype, device=device)
        self.decay = {i: torch.tensor(O.layer_decay(c, i, sem), dtype=torch.float64)
                      for i, (mk, _) in enumerate(plan) if mk == "lightning"}
        self.masks: dict = {}
        self.loads: dict = {}

    def decay_mask(self, i: int, n: int):
        key = (i, n)
        if key not in self.masks:
            t = self.torch.arange(n, dtype=self.torch.float64)
            diff = t[:, None] - t[None, :]
            m = self.torch.exp(-self.decay[i][:, None, None] * diff.clamp_min(0)[None]) * (diff >= 0)[None]
            self.masks[key] = m.to(self.device, self.dtype)  # [H, n, n]
        return self.masks[key]

    def lightning(self, i, x, pos):
        torch, O, c, P = self.torch, self.O, self.c, self.P
        a = f"model.layers.{i}.attention."
        B, n, _ = x.shape
        H, D = c.heads, c.head_dim
        q, k, v = (t.reshape(B, n, H, D) for t in (x @ P[a + "query_key_value.weight"].T).split(H * D, dim=-1))
        q, k = O.rms(q, P[a + "query_layernorm.weight"], c.eps), O.rms(k, P[a + "key_layernorm.weight"], c.eps)
        q, k = O.rope_neox(q, pos, self.lin_freq), O.rope_neox(k, pos, self.lin_freq)
        q = q * D ** -0.5
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, n, D]
        o = ((qh @ kh.transpose(-1, -2)) * self.decay_mask(i, n)) @ vh
        o = o.transpose(1, 2).reshape(B, n, H * D)
        g = x @ P[a + "g_proj.weight"].T
        G = c.group_norm_size
        og = o.reshape(B, n, G, H * D // G)
        og = og * torch.rsqrt((og * og).mean(-1, keepdim=True) + c.eps)
        o = og.reshape(B, n, H * D) * P[a + "g_norm.weight"] * torch.sigmoid(g)
        return o @ P[a + "dense.weight"].T

    def mla(self, i, x, pos):
        torch, O, c, P = self.torch, self.O, self.c, self.P
        a = f"model.layers.{i}.attention."
        B, n, _ = x.shape
        H, Dn, Dr, Dv, Lr = c.heads, c.nope, c.rope, c.vdim, c.kv_lora
        q = O.rms(x @ P[a + "q_a_proj.weight"].T, P[a + "q_a_layernorm.weight"], c.eps) @ P[a + "q_b_proj.weight"].T
        q = q.reshape(B, n, H, Dn + Dr)
        kv = x @ P[a + "kv_a_proj_with_mqa.weight"].T
        ckv = O.rms(kv[..., :Lr], P[a + "kv_a_layernorm.weight"], c.eps)
        kpe = O.rope_gptj(kv[..., None, Lr:], pos, self.mla_freq)  # [B, n, 1, Dr]
        q_nope, q_pe = q[..., :Dn], O.rope_gptj(q[..., Dn:], pos, self.mla_freq)
        kvb = (ckv @ P[a + "kv_b_proj.weight"].T).reshape(B, n, H, Dn + Dv)
        k_nope, vv = kvb[..., :Dn], kvb[..., Dn:]
        Q = torch.cat([q_nope, q_pe], -1).transpose(1, 2)
        K = torch.cat([k_nope, kpe.expand(B, n, H, Dr)], -1).transpose(1, 2)
        score = (Q @ K.transpose(-1, -2)) * (Dn + Dr) ** -0.5  # [B, H, n, n]
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        p = torch.softmax(score.masked_fill(~causal, float("-inf")), dim=-1)
        o = (p @ vv.transpose(1, 2)).transpose(1, 2).reshape(B, n, H * Dv)
        return o @ P[a + "dense.weight"].T

    def swiglu(self, x, pre):
        P, O = self.P, self.O
        return (O.silu(x @ P[pre + "gate_proj.weight"].T) * (x @ P[pre + "up_proj.weight"].T)) @ P[pre + "down_proj.weight"].T

    def moe(self, i, x):
        torch, c, P = self.torch, self.c, self.P
        m = f"model.layers.{i}.mlp."
        B, n, C = x.shape
        X = x.reshape(B * n, C)
        E, K = c.n_experts, c.top_k
        scores = torch.sigmoid(X @ P[m + "gate.weight"].T)  # [N, E]
        sel = scores.detach() + self.bias[i]
        if c.n_group and c.topk_group and E > c.n_group:
            size = E // c.n_group
            gs = sel.reshape(-1, c.n_group, size).topk(min(2, size), dim=-1).values.sum(-1)  # [N, groups]
            keep = torch.zeros_like(gs, dtype=torch.bool).scatter(1, gs.topk(c.topk_group, dim=-1).indices, True)
            sel = sel.masked_fill(~keep.repeat_interleave(size, dim=1), float("-inf"))
        top = sel.topk(K, dim=-1).indices  # [N, K]
        w = scores.gather(1, top)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * c.rsf
        dense_w = torch.zeros_like(scores).scatter(1, top, w)  # [N, E]
        self.loads[i] = torch.bincount(top.flatten(), minlength=E).detach()
        h = self.O.silu(torch.einsum("nc,efc->enf", X, P[m + "experts.gate_proj"])) * torch.einsum("nc,efc->enf", X, P[m + "experts.up_proj"])
        y = torch.einsum("enf,ecf,ne->nc", h, P[m + "experts.down_proj"], dense_w)
        y = y + self.swiglu(X, m + "shared_experts.")
        return y.reshape(B, n, C)

    def forward(self, ids, dropout: float = 0.0):
        torch, O, c, P = self.torch, self.O, self.c, self.P
        F = torch.nn.functional
        n = ids.shape[1]
        pos = torch.arange(n, device=ids.device)
        r = P["model.word_embeddings.weight"][ids]
        for i, (mk, fk) in enumerate(self.plan):
            p = f"model.layers.{i}."
            x = O.rms(r, P[p + "input_layernorm.weight"], c.eps)
            a = self.lightning(i, x, pos) if mk == "lightning" else self.mla(i, x, pos)
            r = r + F.dropout(a, dropout, training=dropout > 0)
            x = O.rms(r, P[p + "post_attention_layernorm.weight"], c.eps)
            f = self.swiglu(x, p + "mlp.") if fk == "dense" else self.moe(i, x)
            r = r + F.dropout(f, dropout, training=dropout > 0)
        return O.rms(r, P["model.norm.weight"], c.eps) @ P["lm_head.weight"].T


def hf_tensors(params, biases, plan, c, torch, dtype):
    """Official names, experts split per expert, expert_bias added; cast to dtype."""
    out = {}
    for name, t in params.items():
        t = t.detach().to("cpu", dtype)
        if name.endswith(("experts.gate_proj", "experts.up_proj", "experts.down_proj")):
            base, kind = name.rsplit(".", 1)
            for e in range(t.shape[0]):
                out[f"{base}.{e}.{kind}.weight"] = t[e].contiguous()
        else:
            out[name] = t.contiguous()
    for i, b in biases.items():
        out[f"model.layers.{i}.mlp.gate.expert_bias"] = b.detach().to("cpu", dtype).contiguous()
    return out


# ----------------------------------------------------------------------------------------------
# Perplexity (the windowing of `bailing perplexity`)
# ----------------------------------------------------------------------------------------------

def windows(ids: list[int], W: int):
    return [ids[s:s + W] for s in range(0, len(ids), W) if len(ids[s:s + W]) >= 2]


def oracle_ppl(model_dir: str, ids: list[int], W: int, torch, O):
    orc = O.Oracle(model_dir, "default", torch.float64)
    nll, count = 0.0, 0
    for w in windows(ids, W):
        logp = torch.log_softmax(orc.step(w, O.Cache()).logits, dim=-1)
        tgt = torch.tensor(w[1:])
        nll -= float(logp[:-1].gather(1, tgt[:, None]).sum())
        count += len(w) - 1
    return math.exp(nll / count), count, nll


def model_ppl(model, ids: list[int], W: int, torch):
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in windows(ids, W):
            t = torch.tensor([w], device=model.device)
            logp = torch.log_softmax(model.forward(t).double(), dim=-1)[0]
            nll -= float(logp[:-1].gather(1, t[0, 1:, None]).sum())
            count += len(w) - 1
    return math.exp(nll / count)


def unigram_ppl(train_ids: list[int], ids: list[int], W: int, V: int) -> float:
    """Add-one unigram model of the training tokens, on the same scored tokens."""
    counts = [1] * V
    for t in train_ids:
        counts[t] += 1
    total = sum(counts)
    scored = [t for w in windows(ids, W) for t in w[1:]]
    return math.exp(-sum(math.log(counts[t] / total) for t in scored) / len(scored))


# ----------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=".data/brown")
    ap.add_argument("--out", default="models/tiny-brown")
    ap.add_argument("--template-config", default="models/tiny-random/tokenizer_config.json")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--bias-rate", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--max-seconds", type=float, default=360, help="safety stop for the training loop")
    ap.add_argument("--ppl-tokens", type=int, default=0, help="smoke tests: score only this many excerpt tokens")
    ap.add_argument("--tokenizer-only", action="store_true")
    args = ap.parse_args()
    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)

    train_docs = [d for d in read(os.path.join(args.data, "train.txt")).split("\n\n") if d.strip()]
    tok = train_tokenizer(train_docs, args.out, args.template_config)
    excerpt = read(os.path.join(args.out, "heldout-excerpt.txt"))
    ex_ids = tok.encode(excerpt).ids
    if args.ppl_tokens:
        ex_ids = ex_ids[: args.ppl_tokens]
    train_ids: list[int] = []
    for d in train_docs:
        train_ids += tok.encode(d).ids + [EOT]
    valid_ids = tok.encode(read(os.path.join(args.data, "valid.txt"))).ids
    print(f"tokenizer: {len(train_docs)} docs, {len(train_ids)} train tokens, {len(valid_ids)} valid, {len(ex_ids)} excerpt", flush=True)
    uni = unigram_ppl(train_ids, ex_ids, WINDOW, CONFIG["vocab_size"])
    print(f"unigram baseline on the excerpt: {uni:.2f}", flush=True)
    if args.tokenizer_only:
        return

    import torch
    import oracle as O

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    write_json(os.path.join(args.out, "config.json"), CONFIG)
    c = O.parse_config(CONFIG)
    sem = O.semantics("default")
    plan = O.layer_plan(c, sem)
    assert [m for m, _ in plan] == ["lightning", "lightning", "mla"] * 2 and plan[0][1] == "dense"
    assert int(c.head_dim * c.prf) == c.rope
    params = build(c, plan, torch, torch.nn)
    n_params = sum(p.numel() for p in params.values())
    print(f"params: {n_params} ({n_params * 2 / 1e6:.2f} MB in bf16)", flush=True)
    moe_layers = [i for i, (_, f) in enumerate(plan) if f == "moe"]

    # (2) parity with the oracle: random weights (with a random expert bias), float64 on the CPU.
    from safetensors.torch import save_file
    pdir = "/tmp/parity-model"
    os.makedirs(pdir, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    pb = {i: 0.05 * torch.randn(c.n_experts, generator=g, dtype=torch.float64) for i in moe_layers}
    pp = {k: (v.detach().double() + 0.3 * torch.randn(v.shape, generator=g, dtype=torch.float64) * v.detach().double().std().clamp_min(0.05))
          for k, v in params.items()}  # perturb the ones-initialised norms too
    write_json(os.path.join(pdir, "config.json"), CONFIG)
    save_file(hf_tensors(pp, pb, plan, c, torch, torch.float64), os.path.join(pdir, "model.safetensors"), metadata={"format": "pt"})
    ref = O.Oracle(pdir, "default", torch.float64).step(ex_ids[:96], O.Cache()).logits
    mine = Trainable(c, plan, sem, O, torch, pp, pb, "cpu", torch.float64).forward(torch.tensor([ex_ids[:96]]))[0]
    parity = float((mine - ref).abs().max() / ref.abs().max())
    print(f"parity with the oracle (float64, random weights, 96 tokens): max rel {parity:.3e}", flush=True)
    if parity > 1e-9:
        print("WARNING: the training forward differs from the oracle", flush=True)

    # (3) training
    dev = "cuda"
    params = {k: torch.nn.Parameter(v.detach().to(dev)) for k, v in params.items()}
    biases = {i: torch.zeros(c.n_experts, device=dev) for i in moe_layers}
    model = Trainable(c, plan, sem, O, torch, params, biases, dev, torch.float32)
    decay, no_decay = [], []
    for k, v in params.items():
        (decay if v.dim() >= 2 else no_decay).append(v)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    data = torch.tensor(train_ids, dtype=torch.long, device=dev)
    valid = torch.tensor(valid_ids, dtype=torch.long, device=dev)
    vwin = valid[: (len(valid_ids) - 1) // args.seq * args.seq + 1]
    vx = vwin[:-1].reshape(-1, args.seq)
    vy = vwin[1:].reshape(-1, args.seq)
    gen = torch.Generator().manual_seed(args.seed)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))

    def val_loss() -> float:
        with torch.no_grad():
            tot = 0.0
            for s in range(0, vx.shape[0], 64):
                lg = model.forward(vx[s:s + 64])
                tot += float(torch.nn.functional.cross_entropy(lg.reshape(-1, c.vocab), vy[s:s + 64].reshape(-1), reduction="sum"))
            return tot / vy.numel()

    curve, best = [], (float("inf"), -1, None, None)
    t0 = time.time()
    run_loss, run_n = 0.0, 0
    stopped_at = None
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            vl = val_loss()
            row = {"step": step, "tokens": step * args.batch * args.seq, "train_loss": run_loss / run_n if run_n else None,
                   "valid_loss": vl, "valid_ppl": math.exp(vl), "lr": lr_at(min(step, args.steps - 1)),
                   "seconds": round(time.time() - t0, 1)}
            curve.append(row)
            run_loss, run_n = 0.0, 0
            print(json.dumps(row), flush=True)
            if vl < best[0]:
                best = (vl, step, {k: v.detach().clone() for k, v in params.items()}, {i: b.clone() for i, b in biases.items()})
            if step == args.steps:
                break
        if time.time() - t0 > args.max_seconds:
            print(f"stopping at step {step}: --max-seconds {args.max_seconds} reached", flush=True)
            stopped_at = step
            break
        for gi in opt.param_groups:
            gi["lr"] = lr_at(step)
        starts = torch.randint(0, len(train_ids) - args.seq - 1, (args.batch,), generator=gen)
        idx = starts[:, None] + torch.arange(args.seq + 1)[None, :]
        win = data[idx.to(dev)]
        logits = model.forward(win[:, :-1], args.dropout)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c.vocab), win[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        with torch.no_grad():  # aux-loss-free balancing: raise the bias of under-loaded experts
            for i in moe_layers:
                ld = model.loads[i].float()
                biases[i] += args.bias_rate * torch.sign(ld.mean() - ld)
        run_loss += float(loss)
        run_n += 1
    train_s = time.time() - t0
    print(f"trained {args.steps} steps in {train_s:.1f} s; best valid loss {best[0]:.4f} at step {best[1]}", flush=True)

    # (4) save the best weights in bf16, score the excerpt with the oracle
    tensors = hf_tensors(best[2], best[3], plan, c, torch, torch.bfloat16)
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    loads = {str(i): (model.loads[i].float() / model.loads[i].sum()).tolist() for i in moe_layers}
    t1 = time.time()
    ppl, scored, nll = oracle_ppl(args.out, ex_ids, WINDOW, torch, O)
    oracle_s = time.time() - t1
    bf = {k: v.to(torch.float32).to(dev) for k, v in hf_tensors(best[2], {}, plan, c, torch, torch.bfloat16).items()}
    stacked = {k: v for k, v in best[2].items()}
    for k in stacked:  # the training model on the bf16-rounded weights, float32 on the GPU
        if k.endswith(("experts.gate_proj", "experts.up_proj", "experts.down_proj")):
            stacked[k] = stacked[k].to(torch.bfloat16).to(torch.float32)
        else:
            stacked[k] = bf[k]
    bbias = {i: b.to(torch.bfloat16).to(torch.float32) for i, b in best[3].items()}
    gpu_ppl = model_ppl(Trainable(c, plan, sem, O, torch, stacked, bbias, dev, torch.float32), ex_ids, WINDOW, torch)
    print(f"excerpt: oracle float64 ppl {ppl:.4f} over {scored} tokens ({oracle_s:.1f} s); training model fp32/TF32 {gpu_ppl:.4f}; unigram {uni:.2f}", flush=True)
    import safetensors
    import tokenizers
    result = {
        "file": "heldout-excerpt.txt",
        "window": WINDOW,
        "windowing": "tokens of the whole file (no special tokens added); windows [0,W), [W,2W), ...; each from an empty cache, scored from its second token",
        "tokens": len(ex_ids),
        "scored_tokens": scored,
        "first_ids": ex_ids[:16],
        "ids_sum": sum(ex_ids),
        "perplexity": ppl,
        "nll_sum": nll,
        "computed_by": "tools/oracle/oracle.py, float64, default semantics, on the bf16 weights",
        "training_model_fp32_perplexity": gpu_ppl,
        "unigram_perplexity": uni,
        "unigram": "add-one unigram over the training tokens (documents joined with <|endoftext|>), same scored tokens",
    }
    write_json(os.path.join(args.out, "heldout-ppl.json"), result)
    report = {
        "args": vars(args), "params": n_params, "train_tokens": len(train_ids), "valid_tokens": len(valid_ids),
        "parity_max_rel": parity, "curve": curve, "best_step": best[1], "best_valid_loss": best[0],
        "train_seconds": train_s, "stopped_early_at": stopped_at, "oracle_seconds": oracle_s, "total_seconds": time.time() - t_start,
        "expert_load_last_step": loads, "expert_bias": {str(i): b.tolist() for i, b in best[3].items()},
        "torch": torch.__version__, "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__,
        "device": torch.cuda.get_device_name(0), "python": sys.version.split()[0],
    }
    write_json(os.path.join(args.out, "train-log.json"), report)


if __name__ == "__main__":
    main()
