// Marks the package's commands (package.json "bin") executable after a build. tsc writes them
// 0644, and `npx bailing` in a checkout runs the file through a symlink that npm made once and
// does not chmod again when the file is rebuilt ("sh: bailing: Permission denied", exit 127).
import { chmodSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { bin } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
for (const file of Object.values(typeof bin === 'string' ? { bin } : bin ?? {})) chmodSync(join(root, file), 0o755);
