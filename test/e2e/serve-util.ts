/** Helpers for the server end-to-end tests: an in-process server on an ephemeral port. */
import { request } from 'node:http';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.js';
import { openModel, type OpenOptions, type OpenedModel } from '../../src/engine/open.js';
import { BailingServer, type ServerOptions } from '../../src/server/server.js';

// dist/test/e2e/*.js → package root
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const TINY = join(ROOT, 'models', 'tiny-random');
if (!existsSync(join(TINY, 'config.json'))) throw new Error(`no tiny model at ${TINY}`);

export interface Running {
  readonly server: BailingServer;
  readonly m: OpenedModel;
  readonly url: string;
  readonly client: OpenAI;
  close(): Promise<void>;
}

export async function startServer(open: OpenOptions = {}, opts: Partial<ServerOptions> = {}): Promise<Running> {
  const be = new CpuBackend({ threads: 2 });
  const m = await openModel(TINY, be, { maxModelLen: 512, seed: 1, ...open });
  const server = new BailingServer(m, { modelName: 'tiny', port: 0, ...opts });
  const { url } = await server.listen();
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: opts.apiKey ?? 'none', maxRetries: 0, timeout: 60_000 });
  return {
    server,
    m,
    url,
    client,
    close: async () => {
      await server.close(1000);
      be.dispose();
    },
  };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * One raw HTTP request (any bytes, any headers). Resolves with the response even when the
 * server answered before reading the whole body (the client's write errors are then ignored).
 */
export function raw(url: string, method: string, path: string, body: Buffer | null, headers: Record<string, string> = {}): Promise<RawResponse> {
  return new Promise((resolvePromise, reject) => {
    let answered = false;
    const req = request(`${url}${path}`, { method, headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolvePromise({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', (e) => {
      if (!answered) reject(e);
    });
    if (body) req.end(body);
    else req.end();
  });
}

/** Parsed Prometheus samples without labels other than model_name (name → value). */
export async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const m = /^([^{\s]+)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m) continue;
    const labels = (m[2] ?? '').replace(/model_name="[^"]*",?/, '').replace(/^\{\}?$/, '');
    out.set(m[1] + (labels && labels !== '{}' ? labels.replace(/^\{,?/, '{') : ''), Number(m[3]));
  }
  return out;
}

/** Wait until the engine is idle and every block and slot is back (via /metrics). */
export async function waitAllFree(url: string, timeoutMs = 10_000): Promise<Map<string, number>> {
  const t0 = Date.now();
  for (;;) {
    const s = await scrape(url);
    const idle =
      s.get('bailing:num_requests_running') === 0 &&
      s.get('bailing:num_requests_waiting') === 0 &&
      s.get('bailing:cache_blocks_free') === s.get('bailing:cache_blocks_total') &&
      s.get('bailing:state_slots_free') === s.get('bailing:state_slots_total');
    if (idle) return s;
    if (Date.now() - t0 > timeoutMs) throw new Error(`cache not free after ${timeoutMs} ms: ${JSON.stringify([...s].filter(([k]) => !k.includes('bucket')))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
