/**
 * Every kernel the CUDA launchers name, checked against its `.cu` declaration without a GPU: the
 * signature string given to c.kernel(file, name, sig) must have one letter per parameter, of the
 * parameter's kind (p pointer, u unsigned long long, l long long, i int, f float, d double).
 * A mismatch would otherwise surface only as a launch error (or a wrong argument) on the GPU
 * machine. Names built with templates (`moe_up_${dtype}`) are checked against every declaration
 * they can match; kernels declared through macros are skipped (their parameter lists are not literal).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root = dirname(fileURLToPath(import.meta.url));
while (!readdirSync(root).includes('package.json')) root = dirname(root);
const launchers = join(root, 'src/backend/cuda');

/** Literal `extern "C" __global__` declarations of a .cu file: name → parameter kinds. */
function declarations(file: string): Map<string, string> {
  const src = readFileSync(join(root, file), 'utf8');
  const out = new Map<string, string>();
  const re = /extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)/g;
  for (const m of src.matchAll(re)) {
    if (m[1].includes('##') || m[2].includes('##')) continue;
    const kinds = m[2]
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean)
      .map((p) => (p.includes('*') ? 'p' : /\bunsigned\s+long\s+long\b/.test(p) ? 'u' : /\blong\s+long\b/.test(p) ? 'l' : /\bfloat\b/.test(p) ? 'f' : /\bdouble\b/.test(p) ? 'd' : /\b(int|unsigned)\b/.test(p) ? 'i' : `?${p}`))
      .join('');
    out.set(m[1], kinds);
  }
  return out;
}

test('kernel signatures in the CUDA launchers match the .cu declarations', (t) => {
  let checked = 0;
  const problems: string[] = [];
  for (const f of readdirSync(launchers).filter((x) => x.endsWith('.ts') && !x.endsWith('.test.ts'))) {
    const src = readFileSync(join(launchers, f), 'utf8');
    // File constants: const F = { key: 'src/…cu', … } and const NAME = 'src/…cu'.
    const files = new Map<string, string>();
    for (const m of src.matchAll(/const\s+F\s*=\s*\{([^}]*)\}/g)) for (const e of m[1].matchAll(/(\w+):\s*'([^']+\.cu)'/g)) files.set(`F.${e[1]}`, e[2]);
    for (const m of src.matchAll(/const\s+(\w+)\s*=\s*'([^']+\.cu)'/g)) files.set(m[1], m[2]);
    for (const m of src.matchAll(/c\.kernel\(\s*([\w.]+|'[^']+')\s*,\s*('[^']+'|`[^`]+`|\w+)\s*,\s*'([a-z]+)'\s*\)/g)) {
      const file = m[1].startsWith("'") ? m[1].slice(1, -1) : files.get(m[1]);
      if (file === undefined) {
        problems.push(`${f}: kernel file ${m[1]} not resolved`);
        continue;
      }
      const decls = declarations(file);
      const name = m[2];
      if (!name.startsWith("'") && !name.startsWith('`')) continue; // a variable: not checkable here
      // A template part is a dtype, a size or a mode word: no underscores.
      const pattern = new RegExp(`^${name.slice(1, -1).replace(/\$\{[^}]*\}/g, '[A-Za-z0-9]+')}$`);
      const matches = [...decls].filter(([n]) => pattern.test(n));
      if (matches.length === 0) {
        if (!/\$\{/.test(name)) problems.push(`${f}: ${name} not declared literally in ${file}`);
        continue;
      }
      for (const [n, kinds] of matches) {
        checked++;
        if (kinds !== m[3]) problems.push(`${f}: ${n} in ${file} takes "${kinds}", launched with "${m[3]}"`);
      }
    }
  }
  t.diagnostic(`${checked} kernel signatures checked`);
  assert.deepEqual(problems, []);
  assert.ok(checked > 40, `only ${checked} signatures found: the pattern no longer matches the launchers`);
});
