import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { HttpError, Router, SseWriter } from './http.js';

/** A response whose socket buffer is "full" until the test emits 'drain'. */
class SlowResponse extends EventEmitter {
  written: string[] = [];
  full = true;
  destroyed = false;
  writableEnded = false;
  headers: Record<string, string> = {};
  flushed = false;
  socket = { setNoDelay: (on: boolean) => assert.equal(on, true) };
  writeHead(status: number, h: Record<string, string>): void {
    assert.equal(status, 200);
    this.headers = h;
  }
  flushHeaders(): void {
    this.flushed = true;
  }
  write(s: string): boolean {
    this.written.push(s);
    return !this.full;
  }
  end(): void {
    this.writableEnded = true;
    this.emit('close');
  }
  destroy(): void {
    this.destroyed = true;
    this.emit('close');
  }
}

test('SSE writer: headers flushed at once; no write while the socket is full; queued events coalesce after drain', async () => {
  const res = new SlowResponse();
  const sse = new SseWriter(res as unknown as ServerResponse, 60_000);
  assert.ok(res.flushed);
  assert.equal(res.headers['Content-Type'], 'text/event-stream');
  sse.send({ a: 1 });
  await new Promise((r) => setImmediate(r));
  sse.send({ a: 2 });
  sse.send({ a: 3 });
  sse.end();
  await new Promise((r) => setImmediate(r));
  assert.equal(res.written.length, 1, 'nothing written until drain');
  res.full = false;
  res.emit('drain');
  await sse.done;
  assert.deepEqual(res.written, ['data: {"a":1}\n\n', 'data: {"a":2}\n\ndata: {"a":3}\n\ndata: [DONE]\n\n']);
  assert.ok(res.writableEnded);
});

test('SSE writer: a client that stops reading is dropped once its pending events pass the bound', async () => {
  const res = new SlowResponse();
  const sse = new SseWriter(res as unknown as ServerResponse, 60_000, 1000);
  let closed = false;
  res.on('close', () => (closed = true));
  sse.send({ first: true }); // written; the socket then reports full and never drains
  await new Promise((r) => setImmediate(r));
  for (let i = 0; i < 100 && !closed; i++) sse.send({ i, pad: 'x'.repeat(20) });
  assert.ok(closed && res.destroyed, 'the stalled response is destroyed (its request is aborted)');
  await sse.done;
  assert.equal(res.written.length, 1);
});

test('SSE writer: keep-alive comments when nothing was written for the interval', async () => {
  const res = new SlowResponse();
  res.full = false;
  const sse = new SseWriter(res as unknown as ServerResponse, 5);
  await new Promise((r) => setTimeout(r, 40));
  assert.ok(res.written.some((w) => w === ': keep-alive\n\n'));
  sse.end();
  await sse.done;
});

test('router: 404 unknown path, 405 with Allow for a known path, HEAD falls back to GET', () => {
  const r = new Router().add('GET', '/a', () => {}).add('POST', '/b', () => {});
  assert.equal(typeof r.match('GET', '/a'), 'function');
  assert.equal(typeof r.match('HEAD', '/a'), 'function');
  const nf = r.match('GET', '/c') as HttpError;
  assert.equal(nf.status, 404);
  const na = r.match('GET', '/b') as HttpError;
  assert.equal(na.status, 405);
  assert.equal(na.headers.Allow, 'POST');
});
