"""PyTorch eager forward of the Ling-2.6-flash 8-layer cut (issue 4's geometry), random bf16 weights
on the GPU, for the side-by-side with bench/cuda-bench.ts in the same run. Written the way the
oracle (tools/oracle/oracle.py) and the HF modeling code compute each block, in plain torch ops:
lightning attention as the recurrence at T = 1 and a chunked (64-token) form for prefill, MLA
expanded with matmul + softmax, MoE as a host loop over the experts that received tokens.

  python3 bench/torch_eager.py [--ctx 1024] [--prefill 1024,8192]
"""
import argparse, json, math, time
import torch
import torch.nn.functional as F

C, H, D, QL, L, DN, DR, DV = 4096, 32, 128, 1536, 512, 128, 64, 128
E, K, FE, FD, V, NL, G = 256, 8, 1024, 9216, 157184, 8, 8
dev, bf = "cuda", torch.bfloat16


def w(*shape):
    return (torch.rand(*shape, device=dev, dtype=torch.float32) * 2 - 1).mul_(math.sqrt(3 / shape[-1])).to(bf)


def rms(x, g, eps=1e-6):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(bf) * g


def rope(x, pos, dim):  # neox on the first `dim` dims of the last axis
    half = dim // 2
    inv = 1.0 / (1e6 ** (torch.arange(0, half, device=dev, dtype=torch.float32) / half))
    ang = pos.float()[:, None] * inv[None]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    r, rest = x[..., :dim].float(), x[..., dim:]
    a, b = r[..., :half], r[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin, rest.float()], -1).to(bf)


class Model:
    def __init__(self):
        self.emb, self.lm, self.fn = w(V, C), w(V, C), torch.ones(C, device=dev, dtype=bf)
        self.layers = []
        for i in range(NL):
            l = {"n1": torch.ones(C, device=dev, dtype=bf), "n2": torch.ones(C, device=dev, dtype=bf)}
            if (i + 1) % 8 != 0:
                l.update(qkv=w(3 * H * D, C), g=w(H * D, C), o=w(C, H * D), qn=torch.ones(D, device=dev, dtype=bf), kn=torch.ones(D, device=dev, dtype=bf),
                         gn=torch.ones(H * D, device=dev, dtype=bf), slope=torch.tensor([2 ** (-8 * (h + 1) / H) for h in range(H)], device=dev))
            else:
                l.update(qa=w(QL, C), qan=torch.ones(QL, device=dev, dtype=bf), qb=w(H * (DN + DR), QL), kva=w(L + DR, C), kvan=torch.ones(L, device=dev, dtype=bf),
                         kvb=w(H * (DN + DV), L), o=w(C, H * DV))
            if i == 0:
                l.update(gu=w(2 * FD, C), dn=w(C, FD))
            else:
                l.update(router=w(E, C).float(), bias=torch.zeros(E, device=dev), wgu=[w(2 * FE, C) for _ in range(E)], wdn=[w(C, FE) for _ in range(E)],
                         sgu=w(2 * FE, C), sdn=w(C, FE))
            self.layers.append(l)

    def mlp(self, x, gu, dn):
        a, b = F.linear(x, gu).chunk(2, -1)
        return F.linear(F.silu(a) * b, dn)

    def moe(self, l, x):
        s = torch.sigmoid(F.linear(x.float(), l["router"]))
        sel = s + l["bias"]
        gs = sel.view(-1, G, E // G).topk(2, -1).values.sum(-1)
        keep = torch.zeros_like(gs).scatter_(1, gs.topk(4, -1).indices, 1.0)
        sel = sel.masked_fill(keep.repeat_interleave(E // G, 1) == 0, float("-inf"))
        ids = sel.topk(K, -1).indices
        wts = s.gather(1, ids)
        wts = (wts / (wts.sum(-1, keepdim=True) + 1e-20) * 2.5).to(bf)
        out = torch.zeros_like(x)
        for e in ids.unique().tolist():  # host loop over the experts that got tokens, as HF eager does
            t, k = (ids == e).nonzero(as_tuple=True)
            out.index_add_(0, t, self.mlp(x[t], l["wgu"][e], l["wdn"][e]) * wts[t, k, None])
        return out + self.mlp(x, l["sgu"], l["sdn"])

    def lightning(self, l, x, pos, st):
        T = x.shape[0]
        q, k, v = F.linear(x, l["qkv"]).view(T, 3, H, D).unbind(1)
        q, k = rope(rms(q, l["qn"]), pos, D // 2), rope(rms(k, l["kn"]), pos, D // 2)
        lam = torch.exp(-l["slope"])  # [H]
        qf, kf, vf = q.float().transpose(0, 1), k.float().transpose(0, 1), v.float().transpose(0, 1)  # [H, T, D]
        S = st["S"]
        if T == 1:
            S.mul_(lam[:, None, None]).add_(kf.transpose(1, 2) @ vf)
            o = qf @ S
        else:  # chunked: intra-chunk with the decay mask, inter-chunk through the state
            o = torch.empty_like(qf)
            for c0 in range(0, T, 64):
                qc, kc, vc = qf[:, c0:c0 + 64], kf[:, c0:c0 + 64], vf[:, c0:c0 + 64]
                n = qc.shape[1]
                i = torch.arange(n, device=dev, dtype=torch.float32)
                dec = torch.exp(-l["slope"][:, None, None] * (i[:, None] - i[None, :]).clamp_min(0)) * (i[:, None] >= i[None, :])
                qd = qc * torch.exp(-l["slope"][:, None, None] * (i[None, :, None] + 1))
                o[:, c0:c0 + n] = ((qc @ kc.transpose(1, 2)) * dec) @ vc + qd @ S
                kd = kc * torch.exp(-l["slope"][:, None, None] * (n - 1 - i[None, :, None]))
                S = S * torch.exp(-l["slope"] * n)[:, None, None] + kd.transpose(1, 2) @ vc
            st["S"] = S
        o = (o * D ** -0.5).transpose(0, 1).reshape(T, H * D).to(bf)
        o = rms(o.view(T, G, -1), l["gn"].view(G, -1)).view(T, H * D) * torch.sigmoid(F.linear(x, l["g"]))
        return F.linear(o, l["o"])

    def mla(self, l, x, pos, st):
        T = x.shape[0]
        q = F.linear(rms(F.linear(x, l["qa"]), l["qan"]), l["qb"]).view(T, H, DN + DR)
        kv = F.linear(x, l["kva"])
        ckv, kpe = rms(kv[:, :L], l["kvan"]), rope(kv[:, None, L:], pos, DR)[:, 0]
        st["ckv"], st["kpe"] = torch.cat([st["ckv"], ckv]), torch.cat([st["kpe"], kpe])
        kvx = F.linear(st["ckv"], l["kvb"]).view(-1, H, DN + DV)
        kn, vv = kvx[..., :DN], kvx[..., DN:]
        kk = torch.cat([kn, st["kpe"][:, None].expand(-1, H, -1)], -1)
        qq = torch.cat([q[..., :DN], rope(q[..., DN:], pos, DR)], -1)
        s = torch.einsum("thd,shd->hts", qq.float(), kk.float()) * (DN + DR) ** -0.5
        S0 = st["ckv"].shape[0] - T
        mask = torch.arange(S0 + T, device=dev)[None] > (S0 + torch.arange(T, device=dev))[:, None]
        p = s.masked_fill(mask, float("-inf")).softmax(-1).to(bf)
        return F.linear(torch.einsum("hts,shd->thd", p, vv).reshape(T, H * DV), l["o"])

    def forward(self, ids, pos, states):
        r = self.emb[ids]
        for i, l in enumerate(self.layers):
            x = rms(r, l["n1"])
            r = r + (self.lightning(l, x, pos, states[i]) if "qkv" in l else self.mla(l, x, pos, states[i]))
            x = rms(r, l["n2"])
            r = r + (self.mlp(x, l["gu"], l["dn"]) if i == 0 else self.moe(l, x))
        return F.linear(rms(r[-1:], self.fn), self.lm)


def fresh_states(ctx):
    return [{"S": torch.rand(H, D, D, device=dev) * 0.01} if (i + 1) % 8 != 0 else
            {"ckv": torch.randn(ctx, L, device=dev, dtype=bf), "kpe": torch.randn(ctx, DR, device=dev, dtype=bf)} for i in range(NL)]


def timed(f, reps):
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize(); t0 = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append((time.perf_counter() - t0) * 1e3)
    return sorted(ts)[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--prefill", default="1024,8192")
    ap.add_argument("--out", default="bench/results/torch-eager.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    m = Model()
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}: weights {torch.cuda.memory_allocated() / 1e9:.1f} GB", flush=True)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    with torch.no_grad():
        st = fresh_states(a.ctx)
        pos = torch.tensor([a.ctx], device=dev)
        ids = torch.tensor([5], device=dev)
        def dec():
            for s in st:
                if "ckv" in s: s["ckv"], s["kpe"] = s["ckv"][:a.ctx], s["kpe"][:a.ctx]
            m.forward(ids, pos, st)
        for _ in range(3): dec()
        ms = timed(dec, 10)
        print(f"eager decode T=1 at ctx {a.ctx}: {ms:.2f} ms ({1000 / ms:.1f} tok/s)", flush=True)
        res["decode_ms"] = ms
        for P in [int(x) for x in a.prefill.split(",") if x]:
            try:
                def pre():
                    m.forward(torch.arange(P, device=dev) % 1000, torch.arange(P, device=dev), fresh_states(0))
                pre()
                ms = timed(pre, 2)
                print(f"eager prefill T={P}: {ms:.1f} ms ({P / ms * 1e3:.0f} tok/s)", flush=True)
                res[f"prefill_{P}_ms"] = ms
            except torch.OutOfMemoryError as e:
                print(f"eager prefill T={P}: out of memory", flush=True)
                res[f"prefill_{P}_ms"] = None
                torch.cuda.empty_cache()
    json.dump(res, open(a.out, "w"), indent=2)


if __name__ == "__main__":
    main()
