/**
 * The OpenAI-compatible HTTP server: node:http, a small router, the engine driven on the event
 * loop. Binds 127.0.0.1 unless told otherwise. close() drains: no new connections or requests
 * (503), in-flight requests finish, then sockets close. Every request is answered; nothing a
 * client sends can take the server down (errors become OpenAI-shaped 4xx, bugs 500).
 */
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { EngineDriver } from '../engine/driver.js';
import type { Engine } from '../engine/engine.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { ServeContext } from './generate.js';
import { errorResponse, HttpError, readJson, Router, sendJson } from './http.js';
import { ServerMetrics } from './metrics.js';
import { handleChat, handleCompletions } from './openai.js';
import { checkDepth, parseDetokenizeRequest, parseTokenizeRequest } from '../api/schema.js';

/** What the server needs from an opened model (engine/open.ts's OpenedModel satisfies it). */
/** What the server runs on: a library BailingModel (shares its engine driver with library calls). */
export interface ServedModel {
  readonly engine: Engine;
  readonly tokenizer: Tokenizer;
  readonly maxModelLen: number;
  /** The engine's driver when the model already has one (BailingModel); else the server makes one. */
  readonly driver?: EngineDriver;
}

export interface ServerOptions {
  readonly modelName: string;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 8000; 0 picks a free port. */
  readonly port?: number;
  /** When set, /v1/*, /tokenize and /detokenize need `Authorization: Bearer <key>`. */
  readonly apiKey?: string | null;
  /** Request bodies above this are refused with 413 (default 4 MiB). */
  readonly maxBodyBytes?: number;
  /** SSE comment after this long without output (default 10 s). */
  readonly keepAliveMs?: number;
  readonly logger?: Logger;
}

const GENERATION = new Set(['/v1/completions', '/v1/chat/completions']);

export class BailingServer {
  readonly driver: EngineDriver;
  readonly metrics: ServerMetrics;
  private readonly http: Server;
  private readonly router = new Router();
  private readonly ctx: ServeContext;
  private readonly inflight = new Set<Promise<void>>();
  private readonly created = Math.floor(Date.now() / 1000);
  private closing = false;
  private readonly apiKey: Buffer | null;
  private readonly maxBody: number;
  private readonly logger: Logger;

  constructor(
    readonly model: ServedModel,
    readonly opts: ServerOptions,
  ) {
    this.logger = opts.logger ?? silentLogger;
    this.driver = model.driver ?? new EngineDriver(model.engine);
    this.driver.onError = (e) => this.logger.error('engine step failed; no more requests are taken', { error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    this.metrics = new ServerMetrics(opts.modelName);
    this.apiKey = opts.apiKey ? Buffer.from(opts.apiKey) : null;
    this.maxBody = opts.maxBodyBytes ?? 4 * 1024 * 1024;
    this.ctx = {
      driver: this.driver,
      tokenizer: model.tokenizer,
      maxModelLen: model.maxModelLen,
      vocabSize: model.engine.model.spec.config.vocab_size,
      modelName: opts.modelName,
      metrics: this.metrics,
      logger: this.logger,
      keepAliveMs: opts.keepAliveMs ?? 10_000,
    };
    this.routes();
    this.http = createServer((req, res) => this.handle(req, res));
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.clientError(err, socket));
  }

  /** Unparseable HTTP (bad request line, oversized headers, stray bytes): an OpenAI-shaped 4xx, then close. */
  private clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const reason = status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request';
    const body = JSON.stringify({ error: { message: `malformed HTTP request (${err.code ?? 'parse error'})`, type: 'invalid_request_error', param: null, code: null } });
    this.metrics.status(status);
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }

  private routes(): void {
    const json = async (req: IncomingMessage): Promise<unknown> => {
      const v = await readJson(req, this.maxBody);
      checkDepth(v);
      return v;
    };
    const ctx = this.ctx;
    this.router
      .add('POST', '/v1/chat/completions', async (req, res, t) => handleChat(ctx, res, await json(req), t))
      .add('POST', '/v1/completions', async (req, res, t) => handleCompletions(ctx, res, await json(req), t))
      .add('GET', '/v1/models', (_req, res) =>
        sendJson(res, 200, {
          object: 'list',
          data: [{ id: ctx.modelName, object: 'model', created: this.created, owned_by: 'bailing', root: ctx.modelName, max_model_len: ctx.maxModelLen }],
        }),
      )
      .add('POST', '/tokenize', async (req, res) => {
        const r = parseTokenizeRequest(await json(req));
        const tk = ctx.tokenizer;
        const tokens =
          r.messages !== null
            ? tk.encode(tk.applyChatTemplate(r.messages, { addGenerationPrompt: r.addGenerationPrompt }), { addSpecialTokens: r.addSpecialTokens })
            : tk.encode(r.prompt ?? '', { addSpecialTokens: r.addSpecialTokens });
        sendJson(res, 200, { tokens, count: tokens.length, max_model_len: ctx.maxModelLen });
      })
      .add('POST', '/detokenize', async (req, res) => {
        const ids = parseDetokenizeRequest(await json(req), { vocabSize: ctx.vocabSize });
        sendJson(res, 200, { prompt: ctx.tokenizer.decode(ids) });
      })
      .add('GET', '/health', (_req, res) => {
        const ok = this.driver.available && !this.closing;
        sendJson(res, ok ? 200 : 503, { status: ok ? 'ok' : this.driver.failure ? 'failed' : 'draining' });
      })
      .add('GET', '/metrics', (_req, res) => {
        const text = this.metrics.render(this.driver.engine.stats());
        res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
        res.end(text);
      });
  }

  /** Start listening; resolves with the bound address. */
  async listen(): Promise<{ host: string; port: number; url: string }> {
    const host = this.opts.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(this.opts.port ?? 8000, host, () => {
        this.http.off('error', reject);
        resolve();
      });
    });
    this.driver.start();
    const a = this.http.address() as AddressInfo;
    const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return { host: a.address, port: a.port, url: `http://${h}:${a.port}` };
  }

  /**
   * Graceful shutdown: stop accepting, let in-flight requests finish (aborting what is left
   * after drainTimeoutMs), then close every socket.
   */
  async close(drainTimeoutMs = 30_000): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((r) => this.http.close(() => r()));
    this.http.closeIdleConnections();
    await this.driver.drain(drainTimeoutMs);
    await Promise.allSettled([...this.inflight]);
    this.http.closeAllConnections();
    await closed;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const arrival = performance.now();
    res.on('finish', () => this.metrics.status(res.statusCode));
    const p: Promise<void> = this.dispatch(req, res, arrival)
      .catch((e: unknown) => this.fail(req, res, e))
      .finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse, arrival: number): Promise<void> {
    let path: string;
    try {
      path = new URL(req.url ?? '/', 'http://localhost').pathname;
    } catch {
      throw new HttpError(400, 'malformed request target', 'invalid_request_error');
    }
    const h = this.router.match(req.method ?? 'GET', path);
    if (h instanceof HttpError) throw h;
    if (this.apiKey && (path.startsWith('/v1/') || path === '/tokenize' || path === '/detokenize')) this.authorize(req);
    if (this.closing && GENERATION.has(path))
      throw new HttpError(503, 'the server is shutting down', 'service_unavailable', null, null, { Connection: 'close' });
    await h(req, res, arrival);
  }

  private authorize(req: IncomingMessage): void {
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    const given = Buffer.from(m ? m[1].trim() : '');
    const key = this.apiKey!;
    if (given.length !== key.length || !timingSafeEqual(given, key))
      throw new HttpError(401, m ? 'invalid API key' : 'missing API key (Authorization: Bearer <key>)', 'authentication_error', 'invalid_api_key', null, {
        'WWW-Authenticate': 'Bearer',
      });
  }

  private fail(req: IncomingMessage, res: ServerResponse, e: unknown): void {
    const { status, body, headers } = errorResponse(e);
    if (status >= 500) this.logger.error('request failed', { url: req.url, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    else this.logger.debug('request refused', { url: req.url, status, message: body.error.message });
    if (res.destroyed) return;
    sendJson(res, status, body, headers);
    // A refused body may still be arriving: discard it so the client can read the answer.
    if (!req.complete) req.resume();
  }
}
