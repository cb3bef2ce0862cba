"""Independent PyTorch oracle of Bailing MoE v2.5 (lightning linear attention + MLA + MoE) and of
Ring-linear-2.0 (BailingMoeLinearV2ForCausalLM: the same model with grouped-query softmax attention
as its full-attention layers).

Written from /work/shared/reference/model-spec.md and docs/ring-linear.md (sections cited inline),
not from any third-party modeling code nor from the TypeScript engine. Straight-line float64 (or
float32) math, no fused kernels:

  r = embed(ids)
  for each layer:  r += mixer(rms_in(r));  r += ffn(rms_post(r));  tap = r
  logits = lm_head(rms_final(r))

Two semantics, the same definitions as src/model/config.ts `semanticsFor`:
  default  official model code: slope factor 1-(l-1)/(L-1)+1e-5, tail layers i >= (L//G)*G are
           full attention, canonical recurrence, fp32/64 state, renorm eps 1e-20.
  vllm     vLLM's file: slope factor 1-l/(L-1)+1e-5, MLA only where (i+1)%G == 0, prefill calls
           use the 256-block algorithm with the exp(-s*t) inter-block decay (spec 4.6), the state is
           rounded to bf16 after every call, router logits rounded to bf16, renorm eps 0.

Only torch and safetensors are needed. Everything runs on the CPU (deterministic, float64).
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field

import torch

VLLM_BLOCK = 256  # vLLM's lightning prefill hard-codes 256 (spec 4.6)


def f32(x: float) -> float:
    """Round a Python float to the nearest float32 (like JS Math.fround)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16_round(t: torch.Tensor) -> torch.Tensor:
    """Round through float32 then bf16 (round to nearest even), back to t's dtype."""
    return t.to(torch.float32).to(torch.bfloat16).to(t.dtype)


def bf16_margin(x: torch.Tensor) -> torch.Tensor:
    """Relative distance |x - m| / |x| of each value to the nearest bf16 rounding midpoint m."""
    x32 = x.to(torch.float32)
    bits = x32.view(torch.int32)
    lo_bits = bits & torch.tensor(-65536, dtype=torch.int32)  # 0xFFFF0000
    lo = lo_bits.view(torch.float32).to(torch.float64)
    hi = (lo_bits + 65536).view(torch.float32).to(torch.float64)
    mid = (lo + hi) / 2
    xd = x.to(torch.float64)
    return (xd - mid).abs() / xd.abs().clamp_min(1e-300)


# ----------------------------------------------------------------------------------------------
# Config (the same field interpretation as src/model/config.ts parseConfig / buildSpec)
# ----------------------------------------------------------------------------------------------

@dataclass
class Semantics:
    name: str
    slope_offset: int
    vllm_prefill: bool
    state_bf16: bool
    router_bf16: bool
    tail_full: bool
    renorm_eps: float


def semantics(name: str) -> Semantics:
    if name == "vllm":
        return Semantics("vllm", 0, True, True, True, False, 0.0)
    if name == "default":
        return Semantics("default", 1, False, False, False, True, 1e-20)
    raise ValueError(f"unknown semantics {name!r} (default | vllm)")


@dataclass
class Config:
    raw: dict
    naming: str
    vocab: int
    hidden: int
    heads: int
    head_dim: int
    layers: int
    group: int
    group_norm_size: int
    first_dense: int
    n_experts: int
    top_k: int
    n_group: int | None
    topk_group: int | None
    rsf: float
    score: str
    expert_bias: bool
    norm_topk: bool
    moe_ffn: int
    n_shared: int
    eps: float
    qk_norm: bool
    linear_silu: bool
    linear_rope: bool
    rope_theta: float
    prf: float
    pos_scale: float
    q_lora: int | None
    kv_lora: int
    nope: int
    rope: int
    vdim: int
    use_bias: bool
    use_qkv_bias: bool
    tie: bool
    layer_types: list | None
    full: str  # full-attention layers: 'mla' (v2.5) or 'gqa' (Ring-linear-2.0)
    kv_heads: int  # GQA key/value heads (num_key_value_heads; lightning layers ignore it)


def parse_config(raw: dict) -> Config:
    def get(k, d=None):
        v = raw.get(k)
        return d if v is None else v

    model_type = get("model_type", "")
    naming = "transformers" if model_type == "bailing2_5_moe" else "bailing"
    # Ring-linear-2.0 (docs/ring-linear.md "Recognition"): its architecture string or model_type
    # makes the full-attention layers GQA; SGLang's full_attention_type other than "mla" does too.
    ring = "BailingMoeLinearV2ForCausalLM" in (get("architectures", []) or []) or model_type == "bailing_moe_linear"
    full = "mla" if get("full_attention_type", "gqa" if ring else "mla") == "mla" else "gqa"
    assert not (full == "gqa" and naming == "transformers"), "GQA layers exist only with the official names"
    hidden = int(raw["hidden_size"])
    heads = int(raw["num_attention_heads"])
    # The transformers port's head_dim is qk_rope_head_dim; its linear head dim is hidden/heads.
    head_dim = hidden // heads if naming == "transformers" else int(get("head_dim", hidden // heads))

    rp = get("rope_parameters", {}) or {}
    num = (int, float)
    rope_theta = rp["rope_theta"] if isinstance(rp.get("rope_theta"), num) else float(get("rope_theta", 10000))
    prf = rp["partial_rotary_factor"] if isinstance(rp.get("partial_rotary_factor"), num) else float(get("partial_rotary_factor", 1))
    rs = raw.get("rope_scaling")
    if rs is None and rp.get("rope_type"):
        rs = rp
    pos_scale = 1.0
    if isinstance(rs, dict):
        typ = str(rs.get("rope_type") or rs.get("type") or "default")
        if typ == "linear":
            pos_scale = float(rs.get("factor", 1))
        elif typ != "default":
            raise ValueError(f"rope_type {typ} not supported by the oracle")

    expert_bias = True if naming == "transformers" else bool(get("moe_router_enable_expert_bias", False))
    score = get("score_function") or get("scoring_func") or ("sigmoid" if expert_bias else "softmax")
    assert (score == "sigmoid") == expert_bias, "score_function must be sigmoid iff expert bias"

    if naming == "transformers" and raw.get("num_shared_experts") is None:
        n_shared = int(get("n_shared_experts", 1))
    else:
        n_shared = int(raw["num_shared_experts"])
    if raw.get("use_linear_silu") is not None:
        linear_silu = bool(raw["use_linear_silu"])
    else:
        linear_silu = bool(get("linear_silu", False))
    if naming == "transformers":
        use_bias = use_qkv_bias = bool(get("attention_bias", False))
    else:
        use_bias, use_qkv_bias = bool(get("use_bias", False)), bool(get("use_qkv_bias", False))

    return Config(
        raw=raw,
        naming=naming,
        vocab=int(raw["vocab_size"]),
        hidden=hidden,
        heads=heads,
        head_dim=head_dim,
        layers=int(raw["num_hidden_layers"]),
        group=int(get("layer_group_size", 1)),
        group_norm_size=int(get("group_norm_size", 1)),
        first_dense=int(get("first_k_dense_replace", 0)),
        n_experts=int(raw["num_experts"]),
        top_k=int(raw["num_experts_per_tok"]),
        n_group=None if raw.get("n_group") is None else int(raw["n_group"]),
        topk_group=None if raw.get("topk_group") is None else int(raw["topk_group"]),
        rsf=float(get("routed_scaling_factor", 1)),
        score=score,
        expert_bias=expert_bias,
        norm_topk=bool(get("norm_topk_prob", True)),
        moe_ffn=int(raw["moe_intermediate_size"]),
        n_shared=n_shared,
        eps=float(get("rms_norm_eps", 1e-5)),
        qk_norm=bool(get("use_qk_norm", False)),
        linear_silu=linear_silu,
        linear_rope=bool(get("linear_rope", True)),
        rope_theta=rope_theta,
        prf=prf,
        pos_scale=pos_scale,
        q_lora=None if raw.get("q_lora_rank") is None else int(raw["q_lora_rank"]),
        kv_lora=int(get("kv_lora_rank", 512)),
        nope=int(get("qk_nope_head_dim", 128)),
        rope=int(get("qk_rope_head_dim", 64)),
        vdim=int(get("v_head_dim", 128)),
        use_bias=use_bias,
        use_qkv_bias=use_qkv_bias,
        tie=bool(get("tie_word_embeddings", False)),
        layer_types=raw.get("layer_types"),
        full=full,
        kv_heads=int(get("num_key_value_heads", heads)),
    )


def layer_plan(c: Config, sem: Semantics) -> list[tuple[str, str]]:
    """[(mixer, ffn)] per layer: mixer 'lightning' | 'mla' | 'gqa', ffn 'dense' | 'moe' (spec 1.1).

    Ring-linear (GQA) keeps the official rule -- a trailing partial group is full attention --
    under both semantics (docs/ring-linear.md "Layer rule": vLLM has no rule of its own for it)."""
    L, G = c.layers, c.group
    tail = sem.tail_full or c.full == "gqa"
    plan = []
    for i in range(L):
        if c.layer_types is not None:
            full = c.layer_types[i] == "full_attention"
        elif G <= 0:
            full = True
        else:
            full = (i + 1) % G == 0 or (tail and i >= (L // G) * G)
        moe = c.n_experts > 1 and i >= c.first_dense
        plan.append((c.full if full else "lightning", "moe" if moe else "dense"))
    return plan


def base_slopes(n: int) -> list[float]:
    """ALiBi slopes (spec 4.4), plain Python floats."""
    def pow2(m: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** (-(math.log2(m) - 3))))
        return [start * start ** i for i in range(m)]

    if math.log2(n).is_integer():
        return pow2(n)
    closest = 2 ** math.floor(math.log2(n))
    return pow2(closest) + base_slopes(2 * closest)[0::2][: n - closest]


def layer_decay(c: Config, layer: int, sem: Semantics) -> list[float]:
    """s_h = f32(f32(slope_h) * f32(factor)); decay per token exp(-s_h) (spec 4.4, config.ts)."""
    L = c.layers
    factor = 1 + 1e-5 if L <= 1 else 1 - (layer - sem.slope_offset) / (L - 1) + 1e-5
    return [f32(f32(s) * f32(factor)) for s in base_slopes(c.heads)]


def inv_freq(theta: float, dim: int, pos_scale: float) -> list[float]:
    """1 / theta^(2i/dim) computed in float32 like torch (and config.ts), divided by the linear factor."""
    return [f32(1.0 / f32(theta ** f32((2 * i) / dim))) / pos_scale for i in range(dim // 2)]


# ----------------------------------------------------------------------------------------------
# Weights (both naming schemes, as src/model/weights.ts accepts them)
# ----------------------------------------------------------------------------------------------

def read_tensors(model_dir: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out: dict[str, torch.Tensor] = {}
    for fn in files:
        for k, v in load_file(os.path.join(model_dir, fn)).items():
            assert k not in out, f"tensor {k} repeated across files"
            out[k] = v
    return out


class Weights:
    def __init__(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype):
        self.t = tensors
        self.dtype = dtype
        self.used: set[str] = set()

    def opt(self, *names: str) -> torch.Tensor | None:
        for n in names:
            if n in self.t:
                self.used.add(n)
                return self.t[n].to(self.dtype)
        return None

    def req(self, *names: str) -> torch.Tensor:
        w = self.opt(*names)
        if w is None:
            raise KeyError(f"missing tensor {names}")
        return w


@dataclass
class LinearW:
    qkv: torch.Tensor
    qkv_b: torch.Tensor | None
    qn: torch.Tensor | None
    kn: torch.Tensor | None
    g: torch.Tensor
    g_b: torch.Tensor | None
    gn: torch.Tensor
    o: torch.Tensor
    o_b: torch.Tensor | None


@dataclass
class MlaW:
    qa: torch.Tensor | None
    qa_b: torch.Tensor | None
    qa_n: torch.Tensor | None
    qb: torch.Tensor | None
    q: torch.Tensor | None
    kva: torch.Tensor
    kva_b: torch.Tensor | None
    kva_n: torch.Tensor
    kvb: torch.Tensor
    o: torch.Tensor
    o_b: torch.Tensor | None


@dataclass
class GqaW:
    qkv: torch.Tensor  # [(H + 2 KVH) D, C]: rows Q (H D) ; K (KVH D) ; V (KVH D)
    qkv_b: torch.Tensor | None
    qn: torch.Tensor | None  # [D]
    kn: torch.Tensor | None  # [D]
    o: torch.Tensor  # [C, H D]
    o_b: torch.Tensor | None


@dataclass
class MlpW:
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    gate_b: torch.Tensor | None = None
    up_b: torch.Tensor | None = None
    down_b: torch.Tensor | None = None


@dataclass
class MoeW:
    router: torch.Tensor
    bias: torch.Tensor | None
    experts: list  # [MlpW]
    shared: MlpW | None


@dataclass
class LayerW:
    mixer_kind: str
    ffn_kind: str
    norm_in: torch.Tensor
    norm_post: torch.Tensor
    mixer: object
    ffn: object


def load_weights(c: Config, plan, tensors, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[LayerW]]:
    w = Weights(tensors, dtype)
    embed = w.req("model.word_embeddings.weight", "model.embed_tokens.weight")
    final = w.req("model.norm.weight")
    lm = w.opt("lm_head.weight")
    if lm is None:
        assert c.tie, "lm_head.weight missing and tie_word_embeddings false"
        lm = embed

    def mlp(p: str) -> MlpW:
        return MlpW(w.req(p + "gate_proj.weight"), w.req(p + "up_proj.weight"), w.req(p + "down_proj.weight"),
                    w.opt(p + "gate_proj.bias"), w.opt(p + "up_proj.bias"), w.opt(p + "down_proj.bias"))

    layers = []
    for i, (mk, fk) in enumerate(plan):
        p = f"model.layers.{i}."
        if mk == "lightning":
            a, b = p + "attention.", p + "linear_attn."
            mixer = LinearW(
                qkv=w.req(a + "query_key_value.weight", b + "query_key_value.weight"),
                qkv_b=w.opt(a + "query_key_value.bias", b + "query_key_value.bias"),
                qn=w.opt(a + "query_layernorm.weight", b + "query_layernorm.weight") if c.qk_norm else None,
                kn=w.opt(a + "key_layernorm.weight", b + "key_layernorm.weight") if c.qk_norm else None,
                g=w.req(a + "g_proj.weight", b + "g_proj.weight"),
                g_b=w.opt(a + "g_proj.bias", b + "g_proj.bias"),
                gn=w.req(a + "g_norm.weight", b + "g_norm.weight"),
                o=w.req(a + "dense.weight", b + "o_proj.weight"),
                o_b=w.opt(a + "dense.bias", b + "o_proj.bias"),
            )
            assert (mixer.qkv_b is not None) == (c.use_bias or c.use_qkv_bias), f"layer {i}: qkv bias vs flags"
            assert (mixer.o_b is not None) == c.use_bias, f"layer {i}: dense bias vs use_bias"
            if c.qk_norm:
                assert mixer.qn is not None and mixer.kn is not None
        elif mk == "gqa":
            # docs/ring-linear.md "GQA projections", "Biases", "qk-norm": official names only.
            a = p + "attention."
            mixer = GqaW(
                qkv=w.req(a + "query_key_value.weight"),
                qkv_b=w.opt(a + "query_key_value.bias"),
                qn=w.opt(a + "query_layernorm.weight") if c.qk_norm else None,
                kn=w.opt(a + "key_layernorm.weight") if c.qk_norm else None,
                o=w.req(a + "dense.weight"),
                o_b=w.opt(a + "dense.bias"),
            )
            D = c.head_dim
            assert tuple(mixer.qkv.shape) == ((c.heads + 2 * c.kv_heads) * D, c.hidden), f"layer {i}: GQA qkv shape {tuple(mixer.qkv.shape)}"
            assert tuple(mixer.o.shape) == (c.hidden, c.heads * D), f"layer {i}: GQA dense shape {tuple(mixer.o.shape)}"
            assert (mixer.qkv_b is not None) == (c.use_bias or c.use_qkv_bias), f"layer {i}: GQA qkv bias vs flags"
            assert (mixer.o_b is not None) == c.use_bias, f"layer {i}: GQA dense bias vs use_bias"
            if c.qk_norm:
                assert mixer.qn is not None and mixer.kn is not None and mixer.qn.numel() == D
        else:
            a, b = p + "attention.", p + "self_attn."
            mixer = MlaW(
                qa=w.opt(a + "q_a_proj.weight", b + "q_a_proj.weight"),
                qa_b=w.opt(a + "q_a_proj.bias", b + "q_a_proj.bias"),
                qa_n=w.opt(a + "q_a_layernorm.weight", b + "q_a_layernorm.weight"),
                qb=w.opt(a + "q_b_proj.weight", b + "q_b_proj.weight"),
                q=w.opt(a + "q_proj.weight", b + "q_proj.weight"),
                kva=w.req(a + "kv_a_proj_with_mqa.weight", b + "kv_a_proj_with_mqa.weight"),
                kva_b=w.opt(a + "kv_a_proj_with_mqa.bias", b + "kv_a_proj_with_mqa.bias"),
                kva_n=w.req(a + "kv_a_layernorm.weight", b + "kv_a_layernorm.weight"),
                kvb=w.req(a + "kv_b_proj.weight", b + "kv_b_proj.weight"),
                o=w.req(a + "dense.weight", b + "o_proj.weight"),
                o_b=w.opt(a + "dense.bias", b + "o_proj.bias"),
            )
            if c.q_lora:
                assert mixer.qa is not None and mixer.qb is not None and mixer.qa_n is not None
            else:
                assert mixer.q is not None
            assert (mixer.kva_b is not None) == c.use_qkv_bias and (mixer.o_b is not None) == c.use_qkv_bias
        if fk == "dense":
            ffn = mlp(p + "mlp.")
            assert (ffn.gate_b is not None) == c.use_bias
        else:
            m = p + "mlp."
            router = w.req(m + "gate.weight")
            bias = None
            if c.expert_bias:
                bias = w.req(m + "gate.expert_bias", m + "gate.e_score_correction_bias",
                             m + "experts.e_score_correction_bias", m + "experts.expert_bias")
            E, F = c.n_experts, c.moe_ffn
            gu = w.opt(m + "experts.gate_up_proj")
            if gu is not None:  # transformers port: stacked [E, 2F, C] (gate rows first) and [E, C, F]
                dn = w.req(m + "experts.down_proj")
                experts = [MlpW(gu[e, :F], gu[e, F:], dn[e]) for e in range(E)]
            else:
                experts = [mlp(f"{m}experts.{e}.") for e in range(E)]
            shared = mlp(m + "shared_experts.") if c.n_shared > 0 else None
            ffn = MoeW(router, bias, experts, shared)
        layers.append(LayerW(mk, fk, w.req(p + "input_layernorm.weight"), w.req(p + "post_attention_layernorm.weight"), mixer, ffn))
    extra = [n for n in tensors if n not in w.used and not n.startswith("model.mtp")
             and not n.endswith((".slope", ".rotary_emb.inv_freq"))
             and not (n.startswith("model.layers.") and int(n.split(".")[2]) >= c.layers)]
    if extra:
        raise KeyError(f"unexpected tensors: {extra[:10]}")
    return embed, final, lm, layers


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

def rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def lin(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    y = x @ w.T
    return y if b is None else y + b


def silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def swiglu(x: torch.Tensor, m: MlpW) -> torch.Tensor:
    return lin(silu(lin(x, m.gate, m.gate_b)) * lin(x, m.up, m.up_b), m.down, m.down_b)


def rope_neox(x: torch.Tensor, pos: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x [n, H, D]; rotate dims [0, 2m) as pairs (i, i+m), m = len(freqs); the rest pass through."""
    m = freqs.numel()
    if m == 0:
        return x
    ang = pos.to(x.dtype)[:, None] * freqs[None, :]  # [n, m]
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    a, b = x[..., :m], x[..., m:2 * m]
    return torch.cat([a * cos - b * sin, b * cos + a * sin, x[..., 2 * m:]], dim=-1)


def rope_gptj(x: torch.Tensor, pos: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x [n, H, R] with R = 2·len(freqs); pairs (2i, 2i+1)."""
    ang = pos.to(x.dtype)[:, None] * freqs[None, :]
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = b * cos + a * sin
    return out


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

@dataclass
class Cache:
    """Per-sequence state: lightning S [H, D, D] per linear layer, MLA latents per MLA layer."""
    length: int = 0
    states: dict = field(default_factory=dict)  # layer -> [H, D, D]
    states_pre_bf16: dict = field(default_factory=dict)  # layer -> last state before bf16 rounding (vllm)
    ckv: dict = field(default_factory=dict)  # layer -> [N, kv_lora]
    kpe: dict = field(default_factory=dict)  # layer -> [N, rope]
    k: dict = field(default_factory=dict)  # GQA layer -> [N, KVH, D] (normed, rotated)
    v: dict = field(default_factory=dict)  # GQA layer -> [N, KVH, D]


@dataclass
class StepOut:
    logits: torch.Tensor  # [n, V]
    taps: list  # per layer [n, C]
    margins: dict  # moe layer -> [n] routing margin (selection-score gap K / K+1, and group gap)
    bf16_margins: dict  # moe layer -> [n] (vllm: distance of router logits to bf16 midpoints)


class Oracle:
    def __init__(self, model_dir: str, sem_name: str, dtype: torch.dtype = torch.float64):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.c = parse_config(json.load(f))
        self.sem = semantics(sem_name)
        self.dtype = dtype
        self.plan = layer_plan(self.c, self.sem)
        self.embed, self.final, self.lm, self.layers = load_weights(self.c, self.plan, read_tensors(model_dir), dtype)
        c = self.c
        self.decay = {i: torch.tensor(layer_decay(c, i, self.sem), dtype=torch.float64)
                      for i, (mk, _) in enumerate(self.plan) if mk == "lightning"}
        self.lin_rot = int(math.floor(c.head_dim * c.prf)) if c.linear_rope else 0
        assert self.lin_rot % 2 == 0 and self.lin_rot <= c.head_dim
        self.lin_freq = torch.tensor(inv_freq(c.rope_theta, self.lin_rot, c.pos_scale), dtype=torch.float64)
        self.mla_freq = torch.tensor(inv_freq(c.rope_theta, c.rope, c.pos_scale), dtype=torch.float64)
        # GQA layers rotate int(D * partial_rotary_factor) dims always (linear_rope is about the
        # lightning layers only): docs/ring-linear.md "RoPE".
        self.gqa_rot = int(c.head_dim * c.prf) if c.full == "gqa" else 0
        assert self.gqa_rot % 2 == 0 and self.gqa_rot <= c.head_dim
        self.gqa_freq = torch.tensor(inv_freq(c.rope_theta, self.gqa_rot, c.pos_scale), dtype=torch.float64)
        if c.full == "gqa":
            assert c.heads % c.kv_heads == 0, "num_attention_heads must be a multiple of num_key_value_heads"
        self.groups = 0
        if c.n_group is not None and c.topk_group is not None and c.n_experts > c.n_group and c.n_experts % c.n_group == 0:
            self.groups = c.n_group

    # -- lightning (spec 4.2-4.6) -------------------------------------------------------------
    def lightning(self, i: int, w: LinearW, x: torch.Tensor, pos: torch.Tensor, cache: Cache) -> torch.Tensor:
        c, n = self.c, x.shape[0]
        H, D = c.heads, c.head_dim
        qkv = lin(x, w.qkv, w.qkv_b)
        if c.linear_silu:
            qkv = silu(qkv)  # vLLM's reading: SiLU on q, k and v
        q, k, v = (t.reshape(n, H, D) for t in qkv.split(H * D, dim=-1))
        if c.qk_norm:
            q, k = rms(q, w.qn, c.eps), rms(k, w.kn, c.eps)
        q, k = rope_neox(q, pos, self.lin_freq.to(x.dtype)), rope_neox(k, pos, self.lin_freq.to(x.dtype))
        q = q * D ** -0.5
        s = self.decay[i].to(x.dtype)  # [H]
        S = cache.states.get(i)
        if S is None:
            S = torch.zeros(H, D, D, dtype=x.dtype)
        qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [H, n, D]
        if n > 1 and self.sem.vllm_prefill:
            o, S = self.vllm_prefill(qh, kh, vh, s, S)
        else:
            o, S = self.recurrence(qh, kh, vh, s, S)
        if self.sem.state_bf16:
            cache.states_pre_bf16[i] = S.clone()
            S = bf16_round(S)
        cache.states[i] = S
        o = o.transpose(0, 1).reshape(n, H * D)
        g = lin(x, w.g, w.g_b)
        G = c.group_norm_size
        og = o.reshape(n, G, H * D // G)
        og = og * torch.rsqrt((og * og).mean(-1, keepdim=True) + c.eps)
        o = og.reshape(n, H * D) * w.gn * torch.sigmoid(g)
        return lin(o, w.o, w.o_b)

    @staticmethod
    def recurrence(q, k, v, s, S):
        """Canonical: S_t = exp(-s) S_{t-1} + k_t^T v_t;  o_t = q_t S_t (q pre-scaled)."""
        lam = torch.exp(-s)[:, None, None]
        outs = []
        for t in range(q.shape[1]):
            S = lam * S + k[:, t, :, None] * v[:, t, None, :]
            outs.append(torch.einsum("hd,hde->he", q[:, t], S))
        return torch.stack(outs, dim=1), S

    @staticmethod
    def vllm_prefill(q, k, v, s, S):
        """vLLM's prefill (spec 4.6): 256-token blocks from the start of the call; the carried state
        enters block-local token t with exp(-s*t) (canonical would be exp(-s*(t+1)))."""
        H, n, D = q.shape
        out = torch.empty_like(v)
        sh = s[:, None, None]
        for b0 in range(0, n, VLLM_BLOCK):
            L = min(VLLM_BLOCK, n - b0)
            qb, kb, vb = q[:, b0:b0 + L], k[:, b0:b0 + L], v[:, b0:b0 + L]
            t = torch.arange(L, dtype=q.dtype)
            diff = t[:, None] - t[None, :]
            causal = (diff >= 0)
            dec = torch.where(causal[None], torch.exp(-sh * diff.clamp_min(0)[None]), torch.zeros((), dtype=q.dtype))
            intra = ((qb @ kb.transpose(1, 2)) * dec) @ vb
            inter = (qb @ S) * torch.exp(-sh * t[None, :, None])
            out[:, b0:b0 + L] = intra + inter
            kdec = kb * torch.exp(-sh * (L - 1 - t)[None, :, None])
            S = torch.exp(-s * L)[:, None, None] * S + kdec.transpose(1, 2) @ vb
        return out, S

    # -- MLA (spec 5.2), expanded form ---------------------------------------------------------
    def mla(self, i: int, w: MlaW, x: torch.Tensor, pos: torch.Tensor, cache: Cache) -> torch.Tensor:
        c, n = self.c, x.shape[0]
        H, Dn, Dr, Dv, Lr = c.heads, c.nope, c.rope, c.vdim, c.kv_lora
        if c.q_lora:
            q = lin(rms(lin(x, w.qa, w.qa_b), w.qa_n, c.eps), w.qb)
        else:
            q = lin(x, w.q)
        q = q.reshape(n, H, Dn + Dr)
        kv = lin(x, w.kva, w.kva_b)
        ckv = rms(kv[:, :Lr], w.kva_n, c.eps)
        kpe = rope_gptj(kv[:, None, Lr:], pos, self.mla_freq.to(x.dtype))[:, 0]
        q_nope, q_pe = q[..., :Dn], rope_gptj(q[..., Dn:], pos, self.mla_freq.to(x.dtype))
        prev_c, prev_k = cache.ckv.get(i), cache.kpe.get(i)
        all_c = ckv if prev_c is None else torch.cat([prev_c, ckv])
        all_k = kpe if prev_k is None else torch.cat([prev_k, kpe])
        cache.ckv[i], cache.kpe[i] = all_c, all_k
        N = all_c.shape[0]
        kvb = lin(all_c, w.kvb).reshape(N, H, Dn + Dv)
        k_nope, vv = kvb[..., :Dn], kvb[..., Dn:]
        score = torch.einsum("thd,shd->hts", q_nope, k_nope) + torch.einsum("thd,sd->hts", q_pe, all_k)
        score = score * (Dn + Dr) ** -0.5
        key_pos = torch.arange(N)
        mask = key_pos[None, :] > pos[:, None]  # [n, N] future keys
        score = score.masked_fill(mask[None], float("-inf"))
        p = torch.softmax(score, dim=-1)
        o = torch.einsum("hts,shd->thd", p, vv).reshape(n, H * Dv)
        return lin(o, w.o, w.o_b)

    # -- GQA (docs/ring-linear.md), expanded per query head ------------------------------------
    def gqa(self, i: int, w: GqaW, x: torch.Tensor, pos: torch.Tensor, cache: Cache) -> torch.Tensor:
        c, n = self.c, x.shape[0]
        H, KVH, D = c.heads, c.kv_heads, c.head_dim
        qkv = lin(x, w.qkv, w.qkv_b)
        q = qkv[:, :H * D].reshape(n, H, D)
        k = qkv[:, H * D:(H + KVH) * D].reshape(n, KVH, D)
        v = qkv[:, (H + KVH) * D:].reshape(n, KVH, D)
        if c.qk_norm:  # per-head RMSNorm over D, before RoPE
            q, k = rms(q, w.qn, c.eps), rms(k, w.kn, c.eps)
        f = self.gqa_freq.to(x.dtype)
        q, k = rope_neox(q, pos, f), rope_neox(k, pos, f)
        K = k if i not in cache.k else torch.cat([cache.k[i], k])
        V = v if i not in cache.v else torch.cat([cache.v[i], v])
        cache.k[i], cache.v[i] = K, V
        N = K.shape[0]
        future = torch.arange(N)[None, :] > pos[:, None]  # [n, N]
        per_kv = H // KVH
        heads = []
        for h in range(H):
            g = h // per_kv  # consecutive query heads share a KV head
            sc = (q[:, h, :] @ K[:, g, :].T) * D ** -0.5  # [n, N]
            sc = sc.masked_fill(future, float("-inf"))
            heads.append(torch.softmax(sc, dim=-1) @ V[:, g, :])  # [n, D]
        o = torch.stack(heads, dim=1).reshape(n, H * D)
        return lin(o, w.o, w.o_b)

    # -- MoE (spec 6.2, 6.3) -------------------------------------------------------------------
    def moe(self, w: MoeW, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        c, n = self.c, x.shape[0]
        E, K = c.n_experts, c.top_k
        logits = x @ w.router.T
        bm = None
        if self.sem.router_bf16:
            bm = bf16_margin(logits).min(dim=-1).values
            logits = bf16_round(logits)
        scores = torch.sigmoid(logits) if c.score == "sigmoid" else torch.softmax(logits, dim=-1)
        sel = scores + w.bias if w.bias is not None else scores
        out = torch.zeros_like(x)
        margin = torch.full((n,), float("inf"), dtype=torch.float64)
        for t in range(n):
            st = sel[t].tolist()
            allowed = list(range(E))
            if self.groups:
                size = E // self.groups
                gs = []
                for g in range(self.groups):
                    m = sorted(st[g * size:(g + 1) * size], reverse=True)
                    gs.append(m[0] + m[1] if size >= 2 else m[0])
                order = sorted(range(self.groups), key=lambda g: (-gs[g], g))
                keep = set(order[:c.topk_group])
                allowed = [e for e in range(E) if e // size in keep]
                if c.topk_group < self.groups:
                    margin[t] = min(margin[t].item(), gs[order[c.topk_group - 1]] - gs[order[c.topk_group]])
            ranked = sorted(allowed, key=lambda e: (-st[e], e))
            chosen = ranked[:K]
            if len(ranked) > K:
                margin[t] = min(margin[t].item(), st[ranked[K - 1]] - st[ranked[K]])
            wts = scores[t, chosen]
            if c.norm_topk:
                wts = wts / (wts.sum() + self.sem.renorm_eps)
            wts = wts * c.rsf
            acc = torch.zeros_like(x[t])
            for e, we in zip(chosen, wts):
                acc = acc + we * swiglu(x[t:t + 1], w.experts[e])[0]
            out[t] = acc
        if w.shared is not None:
            out = out + swiglu(x, w.shared)
        return out, margin, bm

    # -- one call (prefill of n tokens, or a decode step when n == 1) ---------------------------
    def step(self, ids: list[int], cache: Cache) -> StepOut:
        c, n = self.c, len(ids)
        pos = torch.arange(cache.length, cache.length + n)
        r = self.embed[torch.tensor(ids, dtype=torch.long)]
        taps, margins, bms = [], {}, {}
        for i, lw in enumerate(self.layers):
            x = rms(r, lw.norm_in, c.eps)
            mix = {"lightning": self.lightning, "mla": self.mla, "gqa": self.gqa}[lw.mixer_kind]
            a = mix(i, lw.mixer, x, pos, cache)
            r = r + a
            x = rms(r, lw.norm_post, c.eps)
            if lw.ffn_kind == "dense":
                f = swiglu(x, lw.ffn)
            else:
                f, margins[i], bm = self.moe(lw.ffn, x)
                if bm is not None:
                    bms[i] = bm
            r = r + f
            taps.append(r.clone())
        cache.length += n
        logits = rms(r, self.final, c.eps) @ self.lm.T
        return StepOut(logits, taps, margins, bms)

    def greedy(self, prompt: list[int], n_new: int = 16):
        """Prefill the prompt in ONE call, then decode greedily token by token from the caches."""
        cache = Cache()
        first = self.step(prompt, cache)
        states = {i: S.clone() for i, S in cache.states.items()}
        states_pre = {i: S.clone() for i, S in cache.states_pre_bf16.items()}
        toks, rows = [], [first.logits[-1]]
        dec_margin, dec_bm = float("inf"), float("inf")
        for j in range(n_new):
            tok = int(torch.argmax(rows[-1]).item())  # ties: first index
            toks.append(tok)
            if j == n_new - 1:
                break
            out = self.step([tok], cache)
            rows.append(out.logits[0])
            for m in out.margins.values():
                dec_margin = min(dec_margin, float(m.min()))
            for m in out.bf16_margins.values():
                dec_bm = min(dec_bm, float(m.min()))
        return first, states, states_pre, toks, torch.stack(rows), dec_margin, dec_bm
