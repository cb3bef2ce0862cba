/**
 * CPU matmul benchmark: GFLOP/s and GB/s of weight bytes for f32 and bf16 weights, decode (T = 1)
 * and prefill (T = 64), two weight sizes, one thread and all threads. Decode matvec is bound by
 * memory bandwidth, so the same run measures a copy-bandwidth floor (256 MiB Float32Array
 * `dst.set(src)`, read + write) and reports T = 1 weight GB/s as a fraction of it.
 *
 *   node dist/bench/matmul-bench.js [--out bench/results/matmul-cpu.json]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Prng } from '../src/util/prng.js';
import { f32ToBf16 } from '../src/util/numeric.js';

/** dist/bench/matmul-bench.js → package root. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface Case {
  dtype: 'f32' | 'bf16';
  T: number;
  N: number;
  K: number;
  threads: number;
}

interface CaseResult extends Case {
  repeats: number;
  medianMs: number;
  gflops: number;
  weightGBps: number;
  /** T = 1 only: weightGBps ÷ copy GB/s. */
  floorRatio: number | null;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Time fn: one warmup call sizes the repeat count to ~budgetMs (3..50 repeats); returns the median. */
function timeIt(fn: () => void, budgetMs: number): { ms: number; repeats: number } {
  let t0 = performance.now();
  fn();
  const first = performance.now() - t0;
  const repeats = Math.max(3, Math.min(50, Math.floor(budgetMs / Math.max(first, 1e-3))));
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  return { ms: median(times), repeats };
}

/** Copy bandwidth in GB/s (bytes read + written), the decode floor on this machine. */
function copyBandwidth(): number {
  const n = (256 * 2 ** 20) / 4;
  const src = new Float32Array(n);
  const dst = new Float32Array(n);
  for (let i = 0; i < n; i += 1024) src[i] = i; // touch every page before timing
  dst.set(src);
  const { ms } = timeIt(() => dst.set(src), 1500);
  return (2 * n * 4) / (ms * 1e6);
}

function randomWeightBytes(dtype: 'f32' | 'bf16', n: number, rng: Prng): Uint8Array {
  if (dtype === 'f32') {
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = rng.next() - 0.5;
    return new Uint8Array(v.buffer);
  }
  const v = new Uint16Array(n);
  for (let i = 0; i < n; i++) v[i] = f32ToBf16(rng.next() - 0.5);
  return new Uint8Array(v.buffer);
}

function runCase(be: CpuBackend, c: Case, wBytes: Uint8Array, rng: Prng): CaseResult {
  const w = be.loadWeight({ dtype: c.dtype, shape: [c.N, c.K], parts: [wBytes] }, 'matrix');
  const x = be.alloc('f32', [c.T, c.K]);
  be.upload(x, Float64Array.from({ length: c.T * c.K }, () => rng.next() - 0.5));
  const out = be.alloc('f32', [c.T, c.N]);
  const { ms, repeats } = timeIt(() => be.ops.matmul(out, x, w, null), 1200);
  const flops = 2 * c.T * c.N * c.K;
  const bytes = c.N * c.K * (c.dtype === 'f32' ? 4 : 2);
  return { ...c, repeats, medianMs: ms, gflops: flops / (ms * 1e6), weightGBps: bytes / (ms * 1e6), floorRatio: null };
}

function main(): void {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  const outPath = resolve(values.out ?? resolve(ROOT, 'bench/results/matmul-cpu.json'));
  const allThreads = availableParallelism();
  const threadCounts = allThreads > 1 ? [1, allThreads] : [1];
  const rng = new Prng(42);
  // Other processes on the same cores skew every number here; record how busy the machine was.
  const loadBefore = loadavg()[0];

  process.stderr.write('measuring copy bandwidth (256 MiB Float32Array set)…\n');
  const copyGBps = copyBandwidth();
  const results: CaseResult[] = [];
  for (const [N, K] of [[4096, 4096], [1024, 1024]]) {
    for (const dtype of ['f32', 'bf16'] as const) {
      const wBytes = randomWeightBytes(dtype, N * K, rng);
      for (const threads of threadCounts) {
        const be = new CpuBackend({ threads, keepBf16: true });
        try {
          for (const T of [1, 64]) {
            process.stderr.write(`  ${dtype} T=${T} ${N}x${K} threads=${threads}\n`);
            const r = runCase(be, { dtype, T, N, K, threads }, wBytes, rng);
            if (T === 1) r.floorRatio = r.weightGBps / copyGBps;
            results.push(r);
          }
        } finally {
          be.dispose();
        }
      }
    }
  }

  const header = ['dtype', 'T', 'N×K', 'threads', 'median ms', 'GFLOP/s', 'weight GB/s', 'of copy BW'];
  const rows = results.map((r) => [
    r.dtype,
    String(r.T),
    `${r.N}×${r.K}`,
    String(r.threads),
    r.medianMs.toFixed(3),
    r.gflops.toFixed(2),
    r.weightGBps.toFixed(2),
    r.floorRatio === null ? '—' : `${(100 * r.floorRatio).toFixed(0)}%`,
  ]);
  // A markdown table, so the output pastes straight into bench/RESULTS.md.
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`;
  const table = [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
  const machine = {
    cpu: cpus()[0]?.model ?? 'unknown',
    threads: allThreads,
    node: process.version,
    date: new Date().toISOString(),
    loadavg1mBefore: loadBefore,
    loadavg1mAfter: loadavg()[0],
  };
  process.stdout.write(`machine: ${machine.cpu}, ${allThreads} threads, node ${machine.node}, ${machine.date}\n`);
  process.stdout.write(`1-min load average before/after: ${loadBefore.toFixed(2)} / ${machine.loadavg1mAfter.toFixed(2)}\n`);
  process.stdout.write(`copy bandwidth floor: ${copyGBps.toFixed(2)} GB/s (256 MiB dst.set(src), read + write)\n\n${table}\n`);

  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, JSON.stringify({ bench: 'matmul-cpu', machine, copyGBps, results }, null, 2) + '\n');
  process.stderr.write(`wrote ${outPath}\n`);
}

main();
