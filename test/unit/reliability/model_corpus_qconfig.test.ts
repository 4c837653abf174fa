// Model-level hostile corpus, shard "qconfig" (families in corpus_shard.ts SHARDS): every input gives
// an error of the expected code naming the file / tensor / field, or a correct result.
import { test } from 'node:test';
import { runShard } from './corpus_shard';

test('model corpus [qconfig]: named errors or correct results, never a crash, hang or silent garbage', { timeout: 180_000 }, async () => {
  await runShard('qconfig');
});
