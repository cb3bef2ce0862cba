"""Write the oracle's expected outputs next to each model directory.

usage: python3 tools/oracle/make_fixtures.py ROOT [--semantics default,vllm] [--dtype float64|float32] [--store float32|float64]

For every ROOT/<name>/ holding config.json and prompt.json ({"ids": [...]}) and each semantics:
  <name>/<semantics>.safetensors
      logits          [T, V]   every prompt position, one prefill call
      tap.<l>         [T, C]   residual stream after layer l (before the final norm)
      state.<l>       [H, D, D] lightning state after the prompt (vllm: rounded to bf16)
      state_pre_bf16.<l>        (vllm only) the same state before the bf16 rounding
      greedy_logits   [16, V]  logits that chose each greedy token (row 0 = last prompt row)
      margin.<l>      [T]      per-position routing margin of MoE layer l (min of the expert
                               gap K-th/(K+1)-th and the group gap topk_group-th/next)
      bf16_margin.<l> [T]      (vllm only) min relative distance of the router logits to a
                               bf16 rounding midpoint
  <name>/<semantics>.json: greedy tokens, torch version, routing margins, layer plan (mixer
      lightning | mla | gqa), decay rates, RoPE inverse frequencies, self-checks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle import Cache, Oracle  # noqa: E402

N_GREEDY = 16


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over rows of max|a-b| / max|b| (the test's metric)."""
    d = (a - b).abs().amax(dim=-1) / b.abs().amax(dim=-1).clamp_min(1e-300)
    return float(d.max())


def run_one(model_dir: str, sem: str, dtype: torch.dtype, store: torch.dtype) -> dict:
    with open(os.path.join(model_dir, "prompt.json")) as f:
        ids = [int(t) for t in json.load(f)["ids"]]
    try:
        orc = Oracle(model_dir, sem, dtype)
    except KeyError as e:
        # The checkpoint does not fit this semantics' layer plan (e.g. the official tail rule
        # made a full-attention layer that vLLM would build as linear): record it, the TS
        # engine must refuse the same load.
        meta = {"semantics": sem, "torch": torch.__version__, "skipped": f"checkpoint does not fit the layer plan: {e}"}
        write_json(os.path.join(model_dir, f"{sem}.json"), meta)
        return meta
    assert all(0 <= t < orc.c.vocab for t in ids)
    t0 = time.time()
    first, states, states_pre, toks, glog, dec_margin, dec_bm = orc.greedy(ids, N_GREEDY)
    out: dict[str, torch.Tensor] = {"logits": first.logits, "greedy_logits": glog}
    for i, tap in enumerate(first.taps):
        out[f"tap.{i}"] = tap
    for i, S in states.items():
        out[f"state.{i}"] = S
    for i, S in states_pre.items():
        out[f"state_pre_bf16.{i}"] = S
    for i, m in first.margins.items():
        out[f"margin.{i}"] = m.to(torch.float64)
    for i, m in first.bf16_margins.items():
        out[f"bf16_margin.{i}"] = m.to(torch.float64)
    # Computed in `dtype`, stored in `store`: float32 storage (error ~6e-8) keeps the fixtures
    # small and is far below the 1e-5 the tests check.
    save_file({k: v.contiguous().to(store) for k, v in out.items()}, os.path.join(model_dir, f"{sem}.safetensors"))

    pm = min([float(m.min()) for m in first.margins.values()], default=float("inf"))
    pbm = min([float(m.min()) for m in first.bf16_margins.values()], default=float("inf"))
    checks = {}
    if sem == "default":
        # Self-check: the prompt fed token by token (decode path) equals the one-shot prefill.
        cache = Cache()
        rows = [orc.step([t], cache).logits[0] for t in ids]
        checks["decode_vs_prefill_logits"] = rel(torch.stack(rows), first.logits)
        checks["decode_vs_prefill_state"] = max([rel(cache.states[i].flatten()[None], S.flatten()[None]) for i, S in states.items()], default=0.0)
    else:
        # Self-check: in a fresh prefill the vLLM block algorithm equals the canonical recurrence
        # on positions < 256 and differs after.
        orc.sem.vllm_prefill = False
        canon = orc.step(ids, Cache()).logits
        orc.sem.vllm_prefill = True
        n0 = min(256, len(ids))
        checks["vllm_vs_canonical_first_256"] = rel(first.logits[:n0], canon[:n0])
        checks["vllm_vs_canonical_after_256"] = rel(first.logits[n0:], canon[n0:]) if len(ids) > n0 else 0.0

    meta = {
        "semantics": sem,
        "dtype": str(dtype).replace("torch.", ""),
        "stored": str(store).replace("torch.", ""),
        "torch": torch.__version__,
        "prompt_tokens": len(ids),
        "greedy": toks,
        "routing_margin": min(pm, dec_margin),
        "routing_margin_prompt": pm,
        "routing_margin_decode": dec_margin,
        "bf16_margin": min(pbm, dec_bm) if sem == "vllm" else None,
        "bf16_margin_prompt": pbm if sem == "vllm" else None,
        "layers": [{"index": i, "mixer": mk, "ffn": fk} for i, (mk, fk) in enumerate(orc.plan)],
        "decay": {str(i): d.tolist() for i, d in orc.decay.items()},
        "linear_inv_freq": orc.lin_freq.tolist(),
        "mla_inv_freq": orc.mla_freq.tolist(),
        "full_attention": orc.c.full,
        "gqa_kv_heads": orc.c.kv_heads if orc.c.full == "gqa" else None,
        "gqa_inv_freq": orc.gqa_freq.tolist(),
        "self_checks": checks,
        "seconds": round(time.time() - t0, 2),
    }
    write_json(os.path.join(model_dir, f"{sem}.json"), meta)
    return meta


def finite(v):
    """JSON without Infinity/NaN (JSON.parse rejects them): non-finite floats become null."""
    if isinstance(v, float) and not (v == v and abs(v) != float("inf")):
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [finite(x) for x in v]
    return v


def write_json(path: str, meta: dict) -> None:
    with open(path, "w") as f:
        json.dump(finite(meta), f, indent=1, allow_nan=False)
        f.write("\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--semantics", default="default,vllm")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--store", default="float32", choices=["float64", "float32"])
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    store = getattr(torch, a.store)
    torch.set_num_threads(min(8, torch.get_num_threads()))
    print(f"torch {torch.__version__}", flush=True)
    for name in sorted(os.listdir(a.root)):
        d = os.path.join(a.root, name)
        if not (os.path.exists(os.path.join(d, "config.json")) and os.path.exists(os.path.join(d, "prompt.json"))):
            continue
        for sem in a.semantics.split(","):
            m = run_one(d, sem, dtype, store)
            if "skipped" in m:
                print(f"{name:8s} {sem:7s} skipped: {m['skipped']}", flush=True)
                continue
            print(f"{name:8s} {sem:7s} greedy={m['greedy']} margin={m['routing_margin']:.3e} "
                  f"bf16={m['bf16_margin']} checks={m['self_checks']} ({m['seconds']}s)", flush=True)


if __name__ == "__main__":
    main()
