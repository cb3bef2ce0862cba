import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

// A consumer program compiled against the published types (package.json "exports" → dist/*.d.ts),
// as `npm install bailing` would see them. It must compile cleanly, and a misuse must not.
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

const consumer = `
import { loadModel, InvalidRequestError, ModelLoadError, type ChatOutput, type GenerateChunk, type BailingModel } from 'bailing';
export async function main(): Promise<ChatOutput> {
  const model: BailingModel = await loadModel({ device: 'auto', compat: 'vllm', onProgress: (p) => void p.done });
  const ac = new AbortController();
  for await (const c of model.generate('hi', { maxTokens: 4, temperature: 0, signal: ac.signal })) {
    const chunk: GenerateChunk = c;
    void chunk.text.length;
  }
  const out = await model.chat([{ role: 'user', content: 'hi' }], { tools: [], templateKwargs: { enable_thinking: false } }).result;
  void out.reasoning; void out.toolCalls.map((t) => t.name + t.arguments);
  const errs: Function[] = [InvalidRequestError, ModelLoadError];
  void errs;
  await model[Symbol.asyncDispose]();
  return out;
}
`;

function compile(files: Record<string, string>): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'bailing-consumer-'));
  try {
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(root, join(dir, 'node_modules', 'bailing'), 'dir');
    symlinkSync(join(root, 'node_modules', '@types'), join(dir, 'node_modules', '@types'), 'dir');
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
    const names = Object.entries(files).map(([n, src]) => (writeFileSync(join(dir, n), src), join(dir, n)));
    const program = ts.createProgram(names, { strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, types: ['node'], skipLibCheck: true });
    return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a consumer program compiles against the published types', () => {
  assert.deepEqual(compile({ 'main.ts': consumer }), []);
});

test('misuse is a type error (the check can fail)', () => {
  const errors = compile({ 'bad.ts': `import { loadModel } from 'bailing';\nconst m = await loadModel({ device: 'tpu' });\nvoid m.generate(42);\nexport {};\n` });
  assert.ok(errors.some((e) => /"tpu"/.test(e)), errors.join('\n'));
  assert.ok(errors.some((e) => /number/.test(e)), errors.join('\n'));
  // Internal modules are not part of the surface.
  const deep = compile({ 'deep.ts': `import { Engine } from 'bailing/dist/src/engine/engine.js';\nvoid Engine;\nexport {};\n` });
  assert.ok(deep.length > 0, 'deep imports are not exported');
});
