/**
 * The scheduler as plain logic: queue state in, step plan out. No phases: every step, running
 * requests advance first (one decode token, or the next chunk of an unfinished prompt), oldest
 * first; then waiting requests are admitted while the token budget, a state slot and latent
 * blocks remain. When a running request needs blocks that are not free, the newest running
 * request is preempted (its cache freed, recomputed later) until the need is met.
 *
 * The engine applies a plan in this order: preempt, admit, reserve, forward. Keeping this pure
 * lets tests drive it with fake requests and check every budget and cap.
 */

export interface SchedRequest {
  readonly id: number;
  /** Tokens whose cache entries exist. */
  readonly done: number;
  /** Tokens known so far (prompt + generated); `total - done` still need a forward. */
  readonly total: number;
  /** Latent blocks the request holds now (0 while waiting). */
  readonly blocks: number;
}

export interface SchedState {
  /** Oldest first. */
  readonly running: readonly SchedRequest[];
  /** Front of the queue first (preempted requests go back to the front). */
  readonly waiting: readonly SchedRequest[];
  readonly freeBlocks: number;
  readonly freeSlots: number;
  /** Tokens per step (--max-num-batched-tokens). */
  readonly tokenBudget: number;
  /** Sequences per step (--max-num-seqs; also the model's sample-row capacity). */
  readonly maxSeqs: number;
  /** Tokens per latent block; 0 when the model has no paged (MLA) layer. */
  readonly blockSize: number;
}

export interface StepPart {
  readonly id: number;
  /** Tokens this request contributes to the step. */
  readonly len: number;
  /** Blocks the request must hold after the step (done + len tokens). */
  readonly blocks: number;
}

export interface StepPlan {
  /** Running requests to preempt, in order (newest first). */
  readonly preempt: readonly number[];
  /** Waiting requests to admit (each gets a state slot), in queue order. */
  readonly admit: readonly number[];
  /** Every request in the step, in batch order: continuing ones, then admitted ones. */
  readonly parts: readonly StepPart[];
  readonly tokens: number;
}

export function blocksFor(tokens: number, blockSize: number): number {
  return blockSize === 0 ? 0 : Math.ceil(tokens / blockSize);
}

export function planStep(s: SchedState): StepPlan {
  const parts: StepPart[] = [];
  const preempt: number[] = [];
  const admit: number[] = [];
  let free = s.freeBlocks;
  let slots = s.freeSlots;
  let used = 0;
  // Running requests still in play; victims are taken from the end (newest).
  const live = [...s.running];
  for (let i = 0; i < live.length && used < s.tokenBudget && parts.length < s.maxSeqs; i++) {
    const r = live[i];
    const len = Math.min(r.total - r.done, s.tokenBudget - used);
    if (len <= 0) continue;
    const blocks = blocksFor(r.done + len, s.blockSize);
    const need = Math.max(0, blocks - r.blocks);
    while (need > free) {
      const v = live.pop()!;
      preempt.push(v.id);
      free += v.blocks;
      if (v === r) break;
    }
    if (live[i] !== r) break; // r itself was preempted: everything newer is gone too
    free -= need;
    parts.push({ id: r.id, len, blocks: Math.max(blocks, r.blocks) });
    used += len;
  }
  // After a preemption blocks are scarce and the victims (now at the front of the queue) come
  // first next step; admitting others now would overtake them and thrash the same blocks.
  if (preempt.length > 0) return { preempt, admit, parts, tokens: used };
  for (const r of s.waiting) {
    if (used >= s.tokenBudget || parts.length >= s.maxSeqs || slots === 0) break;
    const len = Math.min(r.total - r.done, s.tokenBudget - used);
    const blocks = blocksFor(r.done + len, s.blockSize);
    if (blocks > free) break; // FIFO: no overtaking, so a long prompt is not starved
    free -= blocks;
    slots--;
    admit.push(r.id);
    parts.push({ id: r.id, len, blocks });
    used += len;
  }
  return { preempt, admit, parts, tokens: used };
}
