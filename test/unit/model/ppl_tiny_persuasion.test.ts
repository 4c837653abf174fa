// Full-text float perplexity of tiny (ctx 256) on persuasion.txt vs PyTorch, within 0.2 %.
// Measured: 56.6886 (ref 56.69, −0.002 %).
import { test } from 'node:test';
import { checkTinyPpl } from './_ppl_tiny';

test('tiny (ctx 256) float perplexity on persuasion.txt matches PyTorch within 0.2 %', async () => {
  await checkTinyPpl('persuasion');
});
