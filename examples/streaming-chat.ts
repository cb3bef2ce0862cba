// A streaming chat in the terminal: each line you type is a user turn; the reply streams as it
// is generated. Ctrl-D ends. Run: node dist/examples/streaming-chat.js [--model DIR]
import { createInterface } from 'node:readline';
import { loadModel, type ChatMessage } from 'bailing';

const modelArg = process.argv.indexOf('--model');
const model = await loadModel({
  model: modelArg > 0 ? process.argv[modelArg + 1] : undefined, // default: the embedded model
  onProgress: (p) => p.phase === 'ready' && process.stderr.write('model ready\n'),
});

const history: ChatMessage[] = [{ role: 'system', content: 'You are a helpful assistant.' }];
const rl = createInterface({ input: process.stdin, terminal: false });
try {
  for await (const line of rl) {
    if (line.trim() === '') continue;
    history.push({ role: 'user', content: line });
    const reply = model.chat(history, { maxTokens: 48, temperature: 0.7, seed: 1 });
    process.stdout.write('assistant: ');
    for await (const chunk of reply) process.stdout.write(chunk.content);
    const out = await reply.result;
    process.stdout.write(`\n[${out.completionTokens} tokens, ${out.finishReason}]\n`);
    history.push({ role: 'assistant', content: out.content });
  }
} finally {
  await model.dispose();
}
