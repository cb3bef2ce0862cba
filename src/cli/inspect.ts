/** bailing inspect: what a model is and what it needs, from config.json alone (no weights read). */
import { parseArgs } from 'node:util';
import { buildSpec, loadConfig } from '../model/config.js';
import { formatInspect, inspectModel } from '../model/inspect.js';
import { commonOptions, compat, modelDir, num } from './args.js';

export function inspectCommand(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: { ...commonOptions, batch: { type: 'string' }, context: { type: 'string' }, 'weight-bytes': { type: 'string' }, json: { type: 'boolean' } },
    allowPositionals: false,
  });
  const dir = modelDir(values);
  const { config, naming } = loadConfig(dir);
  const spec = buildSpec(config, naming, compat(values));
  const result = inspectModel(spec, { batch: num(values, 'batch') ?? 1, context: num(values, 'context') ?? 4096, weightBytes: num(values, 'weight-bytes') ?? 2 });
  process.stdout.write(values.json ? JSON.stringify(result, null, 2) + '\n' : formatInspect(result));
}
