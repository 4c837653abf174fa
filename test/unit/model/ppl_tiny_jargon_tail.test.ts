// Full-text float perplexity of tiny (ctx 256) on jargon_tail.txt vs PyTorch, within 0.2 %.
// Measured: 68.1276 (ref 68.13, −0.003 %).
import { test } from 'node:test';
import { checkTinyPpl } from './_ppl_tiny';

test('tiny (ctx 256) float perplexity on jargon_tail.txt matches PyTorch within 0.2 %', async () => {
  await checkTinyPpl('jargon_tail');
});
