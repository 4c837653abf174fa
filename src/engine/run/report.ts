// Text tables for the CLI and the demo: the per-layer summary of a run and a model summary.

import type { LayerReport, ModelSummary, RunSummary } from '../../protocol/messages';

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

/** Renders rows as aligned columns; numeric-looking cells are right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const isNum = (s: string) => /^[-+]?[\d.]+(e[-+]?\d+)?[%x×]?$/i.test(s.trim());
  const line = (r: string[]) =>
    r
      .map((c, i) => pad(c ?? '', w[i], isNum(c ?? '')))
      .join('  ')
      .trimEnd();
  return [line(header), w.map((n) => '─'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

export const fmtLoss = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : x.toExponential(3));

/** The layer table: layer, method, bits, bpw, proxy loss, and the RTN/GPTQ proxy losses when computed. */
export function formatLayerTable(s: RunSummary): string {
  const hasBase = s.layers.some((l) => l.baselines && Object.keys(l.baselines).length > 0);
  const header = ['layer', 'shape', 'method', 'bits', 'bpw', 'rel.loss', 'proxy loss'];
  if (hasBase) header.push('GPTQ loss', 'RTN loss', 'vs GPTQ');
  const rows = s.layers.map((l: LayerReport) => {
    const r = [l.name, `${l.rows}×${l.cols}`, l.config.method, String(l.config.bits), l.bpw.toFixed(3), l.relProxyLoss.toExponential(2), fmtLoss(l.proxyLoss)];
    if (hasBase) {
      const g = l.baselines?.gptq,
        t = l.baselines?.rtn;
      r.push(fmtLoss(g), fmtLoss(t), g ? `${(l.proxyLoss / g).toFixed(2)}×` : '–');
    }
    return r;
  });
  const lines = [table(header, rows)];
  lines.push(
    `model: ${s.layers.length} layers, ${s.bpw.toFixed(3)} bits/weight (quantized linears), ${s.seconds.toFixed(1)} s, EP ${s.ep}${s.backend ? `, backend ${s.backend}` : ''}${s.peakHostBytes ? `, peak host memory ${(s.peakHostBytes / 2 ** 30).toFixed(2)} GiB` : ''}${s.memoryPlan ? ` (planned ${(s.memoryPlan.peakBytes / 2 ** 30).toFixed(2)} GiB within ${s.memoryPlan.budgetMB} MiB${s.memoryPlan.auto ? ', automatic' : ''})` : ''}${s.resumed ? ', resumed' : ''}`,
  );
  if (s.perplexity)
    for (const [t, p] of Object.entries(s.perplexity))
      lines.push(`perplexity ${t}: ${p.toFixed(4)}${s.kl?.[t] === undefined ? '' : `  KL from the float model ${s.kl[t].toFixed(5)} nats/token`}`);
  return lines.join('\n');
}

/** "mixtral model, 8 experts in 32 of 32 blocks" / "qwen2 model" / "bare tensors". */
function describeModel(s: ModelSummary): string {
  if (s.kind !== 'llama') return 'bare tensors';
  const experts = new Set(s.linears.filter((l) => l.expert !== undefined).map((l) => l.expert)).size;
  const sparse = new Set(s.linears.filter((l) => l.expert !== undefined).map((l) => l.block)).size;
  return `${s.family ?? 'llama'} model${experts ? `, ${experts} experts in ${sparse} of ${s.numBlocks} blocks` : ''}`;
}

export function formatModelSummary(s: ModelSummary): string {
  const lines = [
    `${s.path}: ${describeModel(s)}, ${s.files.length} file(s), ${(s.totalBytes / 1e6).toFixed(1)} MB`,
    `params ${s.params.toLocaleString('en-US')}, dtypes ${s.dtypes.join('/')}, blocks ${s.numBlocks}${s.ctx ? `, ctx ${s.ctx}` : ''}, quantizable linears ${s.linears.length}`,
  ];
  const shown = s.linears.slice(0, 14);
  lines.push(
    table(
      ['linear', 'block', 'rows×cols'],
      shown.map((l) => [l.name, String(l.block), `${l.rows}×${l.cols}`]),
    ),
  );
  if (s.linears.length > shown.length) lines.push(`… ${s.linears.length - shown.length} more`);
  return lines.join('\n');
}
