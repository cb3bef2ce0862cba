/**
 * The import rule of DESIGN §2: imports point downward only, no file-level cycles, and the model
 * and engine never reach a concrete backend (they receive a Backend). Imports are read from the
 * source text with TypeScript's own pre-processor (static, re-export, side-effect, type-only and
 * dynamic `import()`), so comments and strings that look like imports are not counted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, posix, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** File (path relative to src/, posix) → the src files it imports. */
export type Graph = ReadonlyMap<string, readonly string[]>;

/** Test files and test helpers may import anything; they are left out of the graph. */
export function isExempt(rel: string): boolean {
  const base = posix.basename(rel);
  return base.endsWith('.test.ts') || base === 'test-util.ts' || base === 'test-harness.ts';
}

/** Layer rank of a src-relative path; lower ranks may not import higher ones. */
export function layerRank(rel: string): number {
  const top = rel.split('/')[0];
  if (top === 'util') return 0;
  if (top === 'tensor') return 1;
  if (rel === 'backend/backend.ts') return 2;
  if (top === 'ops') return 3;
  if (top === 'backend') return 4; // cpu/, reference/, cuda/, select.ts: implementations
  if (top === 'loader' || top === 'tokenizer' || top === 'cache') return 5;
  if (top === 'model') return 6;
  if (top === 'engine') return 7;
  if (top === 'api') return 8; // the public library API; the server and CLI are layers over it
  if (top === 'server') return 9;
  if (top === 'cli') return 10;
  return 11;
}

/** Edges from a lower layer to a higher one. */
export function upwardEdges(g: Graph): string[] {
  const out: string[] = [];
  for (const [from, tos] of g)
    for (const to of tos)
      if (layerRank(from) < layerRank(to)) out.push(`${from} (rank ${layerRank(from)}) → ${to} (rank ${layerRank(to)})`);
  return out;
}

/** Model and engine code must not import a concrete backend. */
export function backendLeaks(g: Graph): string[] {
  const out: string[] = [];
  for (const [from, tos] of g) {
    if (!/^(model|engine)\//.test(from)) continue;
    for (const to of tos) if (/^backend\/(cpu|reference|cuda)\//.test(to)) out.push(`${from} → ${to}`);
  }
  return out;
}

/** Every cycle met by a depth-first walk, each as a chain a → b → … → a. */
export function findCycles(g: Graph): string[][] {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (f: string): void => {
    state.set(f, 'open');
    stack.push(f);
    for (const to of g.get(f) ?? []) {
      const s = state.get(to);
      if (s === 'open') cycles.push([...stack.slice(stack.indexOf(to)), to]);
      else if (s === undefined) visit(to);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of [...g.keys()].sort()) if (!state.has(f)) visit(f);
  return cycles;
}

/** The import graph of every non-exempt .ts file under srcDir, plus specifiers that did not resolve. */
export function readGraph(srcDir: string): { graph: Graph; unresolved: string[] } {
  const files: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) files.push(relative(srcDir, p).split(sep).join('/'));
    }
  };
  walk(srcDir);
  const graph = new Map<string, string[]>();
  const unresolved: string[] = [];
  for (const rel of files) {
    if (isExempt(rel)) continue;
    const deps: string[] = [];
    const { importedFiles } = ts.preProcessFile(readFileSync(join(srcDir, rel), 'utf8'), true, true);
    for (const { fileName: spec } of importedFiles) {
      if (!spec.startsWith('.')) continue; // packages and node: builtins
      const target = posix.normalize(posix.join(posix.dirname(rel), spec));
      // NodeNext specifiers name the emitted .js; the source is the .ts beside it.
      const candidates = [target.replace(/\.js$/, '.ts'), target, `${target}/index.ts`];
      const hit = candidates.find((c) => !c.startsWith('..') && existsSync(join(srcDir, c)) && statSync(join(srcDir, c)).isFile());
      if (hit === undefined) unresolved.push(`${rel}: '${spec}'${target.startsWith('..') ? ' (outside src/)' : ''}`);
      else if (!isExempt(hit)) deps.push(hit);
    }
    graph.set(rel, [...new Set(deps)]);
  }
  return { graph, unresolved };
}

/** dist/src/layers.test.js → package root; when compiled elsewhere, the working directory. */
function srcDir(): string {
  const fromDist = join(dirname(fileURLToPath(import.meta.url)), '../..', 'src');
  return existsSync(join(fromDist, 'layers.test.ts')) ? fromDist : join(process.cwd(), 'src');
}

test('layers: the checker finds an upward edge, a backend leak and a cycle in a synthetic graph', () => {
  const g: Graph = new Map([
    ['util/assert.ts', ['tensor/tensor.ts']], // upward: util (0) → tensor (1)
    ['tensor/tensor.ts', ['util/assert.ts']], // and a cycle with the line above
    ['model/forward.ts', ['backend/cpu/cpu-backend.ts', 'backend/backend.ts']],
    ['backend/cpu/cpu-backend.ts', ['backend/backend.ts', 'ops/matmul/cpu.ts']],
    ['backend/backend.ts', ['tensor/tensor.ts']],
    ['ops/matmul/cpu.ts', []],
    ['engine/a.ts', ['engine/b.ts']],
    ['engine/b.ts', ['engine/c.ts']],
    ['engine/c.ts', ['engine/a.ts']],
  ]);
  assert.deepEqual(upwardEdges(g), ['util/assert.ts (rank 0) → tensor/tensor.ts (rank 1)']);
  assert.deepEqual(backendLeaks(g), ['model/forward.ts → backend/cpu/cpu-backend.ts']);
  // The walk starts at backend/backend.ts (sorted first), so it enters the util/tensor cycle at tensor.
  assert.deepEqual(findCycles(g), [
    ['tensor/tensor.ts', 'util/assert.ts', 'tensor/tensor.ts'],
    ['engine/a.ts', 'engine/b.ts', 'engine/c.ts', 'engine/a.ts'],
  ]);
  // Downward and same-rank edges are fine; ops (3) may not import a backend implementation (4).
  assert.deepEqual(upwardEdges(new Map([['cli/main.ts', ['engine/engine.ts']], ['loader/a.ts', ['cache/b.ts']]])), []);
  assert.equal(upwardEdges(new Map([['ops/x/cpu.ts', ['backend/cpu/pool.ts']]])).length, 1);
  assert.equal(layerRank('index.ts'), 11);
  assert.ok(layerRank('api/model.ts') < layerRank('server/server.ts') && layerRank('server/server.ts') < layerRank('cli/main.ts'));
  assert.ok(isExempt('ops/test-util.ts') && isExempt('model/forward.test.ts') && !isExempt('model/forward.ts'));
});

test('layers: src/ imports point downward, resolve, have no cycles, and model/engine get a Backend', () => {
  const { graph, unresolved } = readGraph(srcDir());
  assert.ok(graph.size > 10, `found only ${graph.size} source files under ${srcDir()}`);
  const problems = [
    ...unresolved.map((u) => `unresolved import ${u}`),
    ...upwardEdges(graph).map((e) => `upward import ${e}`),
    ...backendLeaks(graph).map((e) => `model/engine imports a concrete backend: ${e}`),
    ...findCycles(graph).map((c) => `import cycle: ${c.join(' → ')}`),
  ];
  assert.deepEqual(problems, [], `import rule violations (DESIGN §2):\n  ${problems.join('\n  ')}`);
});
