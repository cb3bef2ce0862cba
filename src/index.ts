/**
 * bailing — the public API. Everything exported here is the documented, stable surface; other
 * modules are internal. Example:
 *
 *   import { loadModel } from 'bailing';
 *   const model = await loadModel({ model: '/models/Ling-2.6-flash', device: 'auto' });
 *   for await (const chunk of model.chat([{ role: 'user', content: 'Hi' }])) process.stdout.write(chunk.content);
 *   await model.dispose();
 */
export {
  loadModel,
  embeddedModelDir,
  BailingModel,
  ModelDisposedError,
  type LoadModelOptions,
  type LoadProgress,
  type GenerateOptions,
  type ChatOptions,
  type GenerateChunk,
  type GenerateOutput,
  type ChatChunk,
  type ChatOutput,
  type ChatMessage,
  type ModelInfo,
  type LogprobEntry,
  type ParsedToolCall,
  type FinishReason,
} from './api/model.js';
export { ChunkStream } from './api/stream.js';
export { BailingError, ModelLoadError, InvalidRequestError, InternalError, UnsupportedError, CudaError, KernelCompileError } from './util/errors.js';
export { EngineUnavailableError } from './engine/driver.js';
export type { Compat } from './model/config.js';
export type { DeviceName } from './backend/select.js';
