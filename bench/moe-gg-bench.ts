/**
 * Micro-benchmark of the MoE prefill grouped GEMMs (src/ops/moe/moe-grouped.cu) at the flash
 * geometry (E 256, K 8, C 4096, F 1024) on one 4096-token chunk with uniform random routing, each
 * variant against a reference build of the kernels (--ref FILE, e.g. the previous version, with its
 * own gather of x into [T·K, C]); reports ms a launch, TFLOP/s of useful work and the number of
 * output elements that differ bitwise from the reference (the k order is the same, so 0 is expected).
 *
 *   node dist/bench/moe-gg-bench.js [--tokens 4096] [--ref dist-x/old/moe/moe-grouped.cu] [--out FILE]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { strideGrid } from '../src/backend/cuda/ops-basic.js';
import { Prng } from '../src/util/prng.js';
import { eventTimer } from './event-timer.js';

const log = (s: string): void => void process.stdout.write(s + '\n');

function main(): void {
  const { values } = parseArgs({ options: { tokens: { type: 'string', default: '4096' }, ref: { type: 'string', default: '' }, out: { type: 'string', default: '' } } });
  const E = 256, K = 8, C = 4096, F = 1024, T = Number(values.tokens), n = T * K;
  const be = new CudaBackend();
  const c = be.c, d = c.driver;
  log(`device: ${be.device.name} (sm_${be.device.major}${be.device.minor}, ${be.device.sms} SMs); E ${E} K ${K} C ${C} F ${F} T ${T}`);
  const alloc = (bytes: number): bigint => c.mem.alloc(bytes, 'bench').ptr;
  const w13 = alloc(E * 2 * F * C * 2), w2 = alloc(E * C * F * 2), x = alloc(T * C * 4);
  const fillB = c.kernel('src/backend/cuda/fill.cu', 'fill_uniform_bf16', 'pluff'), fillF = c.kernel('src/backend/cuda/fill.cu', 'fill_uniform_f32', 'pluff');
  c.launch(fillB, strideGrid(E * 2 * F * C), 256, 0, [w13, E * 2 * F * C, 7n, 0, Math.sqrt(3 / C)]);
  c.launch(fillB, strideGrid(E * C * F), 256, 0, [w2, E * C * F, 8n, 0, Math.sqrt(3 / F)]);
  c.launch(fillF, strideGrid(T * C), 256, 0, [x, T * C, 9n, 0, 1]);
  // Routing: K distinct uniform experts a token; permutation by expert (stable) as ops-moe.ts does.
  const rng = new Prng(4);
  const ids = new Int32Array(n);
  for (let t = 0; t < T; t++) {
    const row = new Set<number>();
    while (row.size < K) row.add(Math.floor(rng.uniform(0, 1) * E) % E);
    ids.set([...row], t * K);
  }
  const start = new Int32Array(E + 1);
  for (const e of ids) start[e + 1]++;
  for (let e = 0; e < E; e++) start[e + 1] += start[e];
  const at = start.slice(0, E), pairs = new Int32Array(n);
  for (let p = 0; p < n; p++) pairs[at[ids[p]]++] = p;
  const sched = (bm: number, colTiles: number): { table: bigint; groups: number; blocks: number } => {
    const t: number[] = [];
    let blocks = 0;
    for (let e = 0; e < E; e++) {
      const rows = start[e + 1] - start[e];
      if (rows === 0) continue;
      t.push(blocks, e, start[e], rows);
      blocks += colTiles * Math.ceil(rows / bm);
    }
    return { table: c.hostArg(`gg-b-${bm}-${colTiles}`, Int32Array.from(t)), groups: t.length / 4, blocks };
  };
  const tok = c.hostArg('gg-b-tok', pairs.map((p) => Math.floor(p / K))), pairsD = c.hostArg('gg-b-pairs', pairs);
  const timer = eventTimer(d, c.stream);
  const timeIt = (f: () => void): number => timer(f, 5, 1);
  const upFlop = 2 * n * 2 * F * C, downFlop = 2 * n * C * F;
  const xh = alloc(n * C * 2), xl = alloc(n * C * 2), hh = alloc(n * F * 2), hl = alloc(n * F * 2), yp = alloc(n * C * 4);
  const refH = new Uint16Array(n * F), refY = new Float32Array(n * C), gotH = new Uint16Array(n * F), gotY = new Float32Array(n * C);
  const diff = (a: Uint16Array | Float32Array, b: Uint16Array | Float32Array): number => {
    const ua = new Uint32Array(a.buffer.slice(0, a.byteLength - (a.byteLength % 4))), ub = new Uint32Array(b.buffer.slice(0, b.byteLength - (b.byteLength % 4)));
    let k = 0;
    for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) k++;
    return k;
  };
  /** NMSE of got vs ref (bf16 words decoded, or f32). */
  const nmse = (a: Uint16Array | Float32Array, b: Uint16Array | Float32Array): number => {
    const val = (v: Uint16Array | Float32Array, i: number): number => (v instanceof Uint16Array ? new Float32Array(new Uint32Array([v[i] << 16]).buffer)[0] : v[i]);
    let num = 0, den = 0;
    for (let i = 0; i < a.length; i += 7) {
      const x = val(a, i), r = val(b, i);
      num += (x - r) ** 2;
      den += r * r;
    }
    return num / den;
  };
  const results: Record<string, unknown>[] = [];
  for (const split of [true, false]) {
    const v = split ? 'split' : 'bf16';
    const lo = (p: bigint): bigint => (split ? p : 0n);
    if (values.ref) {
      const ref = values.ref, sig = 'pppppppiii', smem = 3 * ((split ? 2 : 1) * 64 + 128) * 40 * 2;
      const up = sched(64, F / 64), down = sched(64, C / 128);
      const gather = (): void => c.launch(c.kernel('src/ops/moe/moe.cu', 'moe_gather_split_bf16', 'ppppiil'), strideGrid(n * C), 256, 0, [xh, lo(xl), x, pairsD, K, C, n]);
      const glu = (): void => c.launch(c.kernel(ref, `moe_gg_glu_${v}`, sig), [up.blocks, 1, 1], 128, smem, [0n, hh, lo(hl), xh, lo(xl), w13, up.table, up.groups, F, C]);
      const dn = (): void => c.launch(c.kernel(ref, `moe_gg_down_${v}`, sig), [down.blocks, 1, 1], 128, smem, [yp, 0n, 0n, hh, lo(hl), w2, down.table, down.groups, C, F]);
      const r = { variant: `ref ${v}`, gatherMs: timeIt(gather), gluMs: timeIt(glu), downMs: timeIt(dn) };
      d.dtoh(refH, hh, c.stream);
      d.dtoh(refY, yp, c.stream);
      results.push(r);
    }
    const np = split ? 2 : 1, st = split ? 3 : 4;
    const variants = [
      { pre: 'moe_gg', bm: 128, bn: 128, threads: 128, smem: st * (np * 128 + 128) * 40 * 2 },
      { pre: 'moe_gw', bm: 128, bn: 256, threads: 256, smem: st * (np * 128 + 256) * 128 + 1024 },
    ];
    for (const { pre, bm, bn, threads, smem } of variants) {
      const sig = 'ppppppppiii';
      const up = sched(bm, F / (bn / 2)), down = sched(bm, C / bn);
      const conv = (): void => c.launch(c.kernel('src/ops/moe/moe-grouped.cu', 'moe_gg_split_rows', 'pppl'), strideGrid(T * C), 256, 0, [xh, lo(xl), x, T * C]);
      const glu = (): void => c.launch(c.kernel('src/ops/moe/moe-grouped.cu', `${pre}_glu_${v}`, sig), [up.blocks, 1, 1], threads, smem, [0n, hh, lo(hl), xh, lo(xl), tok, w13, up.table, up.groups, F, C]);
      const dn = (): void => c.launch(c.kernel('src/ops/moe/moe-grouped.cu', `${pre}_down_${v}`, sig), [down.blocks, 1, 1], threads, smem, [yp, 0n, 0n, hh, lo(hl), 0n, w2, down.table, down.groups, C, F]);
      d.memsetD8(hh, 0, n * F * 2, c.stream);
      d.memsetD8(yp, 0, n * C * 4, c.stream);
      const r: Record<string, unknown> = { variant: `${pre} ${v}`, gatherMs: timeIt(conv), gluMs: timeIt(glu), downMs: timeIt(dn) };
      if (values.ref) {
        d.dtoh(gotH, hh, c.stream);
        d.dtoh(gotY, yp, c.stream);
        r.hDiffWords = diff(gotH, refH);
        r.yDiff = diff(gotY, refY);
        r.hNmse = nmse(gotH, refH);
        r.yNmse = nmse(gotY, refY);
      }
      results.push(r);
    }
  }
  for (const r of results) {
    const glu = r.gluMs as number, dn = r.downMs as number;
    log(`${String(r.variant).padEnd(12)} gather ${(r.gatherMs as number).toFixed(3)} ms  gate/up ${glu.toFixed(3)} ms (${(upFlop / glu / 1e9).toFixed(0)} TFLOP/s)  down ${dn.toFixed(3)} ms (${(downFlop / dn / 1e9).toFixed(0)} TFLOP/s)` + ('yDiff' in r ? `  differs from ref: h ${r.hDiffWords} words, y ${r.yDiff}; NMSE h ${(r.hNmse as number).toExponential(1)} y ${(r.yNmse as number).toExponential(1)}` : ''));
  }
  if (values.out) writeFileSync(values.out, JSON.stringify({ device: be.device.name, E, K, C, F, T, results }, null, 2));
  be.dispose();
}

main();
