/**
 * HTTP plumbing on node:http: a small exact-path router (404 / 405 with Allow), bounded body
 * reading (413, strict UTF-8, JSON), OpenAI-shaped error bodies, and an SSE writer that flushes
 * headers at once, disables Nagle, respects backpressure and sends keep-alive comments.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EngineUnavailableError } from '../engine/driver.js';
import { InvalidRequestError } from '../util/errors.js';

/** An error with an HTTP status and OpenAI error fields. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | number | null };
}

/** Status and OpenAI body for any thrown value; unknown errors are 500 without internals. */
export function errorResponse(e: unknown): { status: number; body: ErrorBody; headers: Readonly<Record<string, string>> } {
  if (e instanceof HttpError) return { status: e.status, body: { error: { message: e.message, type: e.type, param: e.param, code: e.code } }, headers: e.headers };
  if (e instanceof InvalidRequestError)
    return { status: 400, body: { error: { message: e.message, type: 'invalid_request_error', param: e.param ?? null, code: null } }, headers: {} };
  if (e instanceof EngineUnavailableError)
    return { status: 503, body: { error: { message: e.message, type: 'service_unavailable', param: null, code: null } }, headers: {} };
  return { status: 500, body: { error: { message: 'internal server error', type: 'server_error', param: null, code: null } }, headers: {} };
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Reads the whole body, at most `limit` bytes (413 beyond, checked against Content-Length first
 * so a declared huge body is refused unread), then strict UTF-8 and JSON (400).
 */
export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const tooLarge = (): HttpError =>
    new HttpError(413, `the request body exceeds ${limit} bytes`, 'invalid_request_error', 'request_too_large', null, { Connection: 'close' });
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    const b = c as Buffer;
    size += b.length;
    if (size > limit) throw tooLarge();
    chunks.push(b);
  }
  let text: string;
  try {
    text = utf8.decode(Buffer.concat(chunks));
  } catch {
    throw new HttpError(400, 'the request body is not valid UTF-8', 'invalid_request_error', null, 'body');
  }
  if (text.trim() === '') throw new HttpError(400, 'the request body is empty; expected a JSON object', 'invalid_request_error', null, 'body');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `the request body is not valid JSON: ${(e as Error).message}`, 'invalid_request_error', null, 'body');
  }
}

/** `arrival` is performance.now() when the request came in (latency metrics). */
export type Handler = (req: IncomingMessage, res: ServerResponse, arrival: number) => Promise<void> | void;

export class Router {
  private readonly routes = new Map<string, Map<string, Handler>>();

  add(method: string, path: string, h: Handler): this {
    const m = this.routes.get(path) ?? new Map<string, Handler>();
    m.set(method, h);
    this.routes.set(path, m);
    return this;
  }

  /** The handler, or an HttpError (404 unknown path, 405 known path with another method). */
  match(method: string, path: string): Handler | HttpError {
    const m = this.routes.get(path);
    if (!m) return new HttpError(404, `no route ${path}`, 'not_found_error', 'not_found');
    const h = m.get(method) ?? (method === 'HEAD' ? m.get('GET') : undefined);
    if (h) return h;
    const allow = [...m.keys()].join(', ');
    return new HttpError(405, `${method} is not allowed on ${path}; allowed: ${allow}`, 'invalid_request_error', 'method_not_allowed', null, { Allow: allow });
  }
}

/**
 * One SSE response. Events queue in memory and are written as the socket drains, so a slow
 * reader never makes `write` buffer without bound inside Node and the step loop never waits on
 * a socket. A comment is sent after `keepAliveMs` without output (long prefills, proxies).
 */
/**
 * Events waiting for a client that stopped reading are held up to this many bytes; past that the
 * client counts as gone (the response is destroyed, which aborts its request and frees its cache)
 * rather than letting one stalled reader grow the server's memory without bound.
 */
export const SSE_MAX_PENDING_BYTES = 8 * 1024 * 1024;

export class SseWriter {
  private queue: string[] = [];
  private pending = 0;
  private pumping = false;
  private ended = false;
  private lastWrite = Date.now();
  private readonly timer: NodeJS.Timeout;
  /** Resolves when the response has ended or the client went away. */
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(
    private readonly res: ServerResponse,
    keepAliveMs: number,
    private readonly maxPendingBytes = SSE_MAX_PENDING_BYTES,
  ) {
    this.done = new Promise((r) => (this.resolveDone = r));
    res.socket?.setNoDelay(true);
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    res.flushHeaders();
    this.timer = setInterval(() => {
      if (Date.now() - this.lastWrite >= keepAliveMs && this.queue.length === 0) this.push(': keep-alive\n\n');
    }, Math.max(1, Math.floor(keepAliveMs / 2)));
    this.timer.unref();
    res.on('close', () => this.finish());
  }

  get closed(): boolean {
    return this.ended || this.res.destroyed;
  }

  send(obj: unknown): void {
    this.push(`data: ${JSON.stringify(obj)}\n\n`);
  }

  /** `data: [DONE]`, then end the response once everything queued is written. */
  end(): void {
    if (this.ended) return;
    this.push('data: [DONE]\n\n');
    this.ended = true;
    void this.pump();
  }

  private push(s: string): void {
    if (this.ended || this.res.destroyed) return;
    this.queue.push(s);
    this.pending += s.length;
    if (this.pending > this.maxPendingBytes) {
      this.queue = [];
      this.res.destroy();
      return;
    }
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0 && !this.res.destroyed) {
        const chunk = this.queue.join('');
        this.queue = [];
        this.pending = 0;
        this.lastWrite = Date.now();
        if (!this.res.write(chunk)) await new Promise<void>((r) => {
          const go = (): void => {
            this.res.off('drain', go);
            this.res.off('close', go);
            r();
          };
          this.res.on('drain', go);
          this.res.on('close', go);
        });
      }
      if (this.ended && !this.res.destroyed && !this.res.writableEnded) this.res.end();
    } finally {
      this.pumping = false;
    }
    if (this.res.writableEnded || this.res.destroyed) this.finish();
  }

  private finish(): void {
    clearInterval(this.timer);
    this.resolveDone();
  }
}
