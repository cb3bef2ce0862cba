import { InternalError } from './errors.js';

/** Invariant check: throws InternalError (never for user input; validate that at the boundary). */
export function assert(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new InternalError(typeof message === 'string' ? message : message());
}
