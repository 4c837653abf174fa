// Reads the `lopro.quantize.*` settings into one QuantizeConfig (keys come from DEFAULT_CONFIG,
// the only list of keys; the setting schema is generated from it, see settingsSchema.ts).

import * as vscode from 'vscode';
import { DEFAULT_CONFIG, type QuantizeConfig } from '../protocol/config';
import { QUANTIZE_SECTION } from './settingsSchema';

export function readQuantizeConfig(): QuantizeConfig {
  const s = vscode.workspace.getConfiguration(QUANTIZE_SECTION);
  const out: Record<string, unknown> = {};
  for (const [k, def] of Object.entries(DEFAULT_CONFIG)) {
    const v = s.get<unknown>(k, def);
    // A hand-edited settings.json can hold the wrong type: fall back to the default for that key.
    out[k] = typeof v === typeof def && v !== null ? v : def;
  }
  return out as unknown as QuantizeConfig;
}
