// Acceptance (issue 4.2) on the embedded tiny model: float perplexity over a full held-out text
// must match the PyTorch float32 numbers of ../shared/protocol.md within 0.2 %.
// One file per text so the two run in parallel (each ~9 s on 2 idle cores).
import assert from 'node:assert/strict';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { openModel, cachedWeights } from '../../../src/engine/model/loader';
import { perplexity } from '../../../src/engine/model/perplexity';
import { tokenizeFile } from '../../../src/engine/model/tokenizer';

/** PyTorch float32, ../shared/protocol.md. */
export const TINY_REFERENCE = { persuasion: 56.69, jargon_tail: 68.13 } as const;

export async function checkTinyPpl(text: keyof typeof TINY_REFERENCE): Promise<number> {
  const ref = TINY_REFERENCE[text];
  const m = openModel('fixtures/tiny');
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  try {
    const { ids } = tokenizeFile(m.tokenizer(), `fixtures/text/${text}.txt`, m.cfg.vocabSize, null);
    const r = await perplexity(m.cfg, ids, cachedWeights(m.weights), { ctx: 256, rt });
    assert.equal(r.windows, Math.floor(ids.length / 256));
    const diff = Math.abs(r.ppl - ref) / ref;
    assert.ok(diff < 0.002, `${text}: ppl ${r.ppl.toFixed(4)} vs ${ref} (${(100 * diff).toFixed(3)} %)`);
    return r.ppl;
  } finally {
    await rt.dispose();
    m.close();
  }
}
