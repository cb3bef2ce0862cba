// Concurrent requests with cancellation: four prompts run together on one engine (batched into
// the same steps); one is cancelled after a few tokens with an AbortController, which frees its
// cache at once. Run: node dist/examples/concurrent.js
import { loadModel } from 'bailing';

const model = await loadModel({ maxNumSeqs: 4 });
try {
  const prompts = ['The jury said', 'In the morning', 'The president of the', 'It was a cold'];
  const cancel = new AbortController();
  const runs = prompts.map(async (prompt, i) => {
    const signal = i === 3 ? cancel.signal : undefined;
    const stream = model.generate(prompt, { maxTokens: 24, temperature: 0, signal });
    let tokens = 0;
    try {
      for await (const chunk of stream) {
        tokens += chunk.tokenIds.length;
        if (i === 3 && tokens >= 4) cancel.abort();
      }
      const out = await stream.result;
      return `${i}: ${JSON.stringify(prompt + out.text)} (${out.completionTokens} tokens, ${out.finishReason})`;
    } catch (e) {
      if (e instanceof Error && e.name === 'AbortError') return `${i}: cancelled after ${tokens} tokens`;
      throw e;
    }
  });
  for (const line of await Promise.all(runs)) console.log(line);
} finally {
  await model.dispose();
}
