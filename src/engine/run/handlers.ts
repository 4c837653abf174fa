// The engine's request handlers (EngineRequests in src/protocol/messages.ts), shared by worker mode.
// Progress, layer/done and log notifications carry the request id; `cancel` aborts ctx.signal,
// which the pipeline checks between layers and calibration batches, and `generate` between tokens.

import * as ort from 'onnxruntime-node';
import type { Connection, RequestContext } from '../../protocol/rpc';
import type { EngineNotifications, EngineRequests } from '../../protocol/messages';
import { inspectModel } from './inspect';
import { measureRun, quantizeRun } from './pipeline';
import type { RunHooks } from './run_context';
import { RunDir, summaryOf } from './rundir';
import { evalPath } from './evaluate';
import { exportRun } from './exports';
import { applyCandidate, layerDetails, requantizeLayer } from './requantize';
import { ENGINE_VERSION } from './version';
import { GenerationModels, serveGenerate } from './generate_models';
import { resolve } from 'node:path';

// Mapped copies: interfaces have no index signature, so they do not satisfy Connection's Record bounds.
type Served = { [K in keyof EngineRequests]: EngineRequests[K] };
type Notes = { [K in keyof EngineNotifications]: EngineNotifications[K] };
/** The engine's end of the connection: serves EngineRequests, calls nothing on the host. */
export type EngineConnection = Connection<Served, Record<string, never>, Notes>;

function hooksFor(conn: EngineConnection, ctx: RequestContext): RunHooks {
  return {
    signal: ctx.signal,
    onProgress: (value) => conn.sendNotification('progress', { requestId: ctx.id, value }),
    onLayerDone: (report) => conn.sendNotification('layer/done', { requestId: ctx.id, report }),
    log: (level, message) => conn.sendNotification('log', { level, message }),
  };
}

/** EPs this onnxruntime-node build was compiled with (whether a GPU is present is probed at run time). */
function availableEps(): string[] {
  const eps = new Set<string>(['cpu']);
  try {
    for (const b of ort.listSupportedBackends()) if (b.name === 'cuda' || b.name === 'webgpu') eps.add(b.name);
  } catch {
    // older builds: CPU only is the safe answer
  }
  return [...eps];
}

export function registerEngineHandlers(conn: EngineConnection): void {
  // Open models of "Try it", kept for this connection's life (a second prompt reuses the session).
  const generation = new GenerationModels((message) => conn.sendNotification('log', { level: 'info', message }));
  conn.onRequest('engine/hello', async () => ({ engineVersion: ENGINE_VERSION, availableEps: availableEps(), pid: process.pid }));
  conn.onRequest('model/inspect', async (p) => inspectModel(p.path));
  conn.onRequest('run/start', async (p, ctx) =>
    quantizeRun({ modelPath: p.modelPath, config: p.config, runDir: p.runDir, resume: p.resume, evalTexts: p.evalTexts }, hooksFor(conn, ctx)),
  );
  conn.onRequest('plan/measure', async (p, ctx) => measureRun(p, hooksFor(conn, ctx)));
  conn.onRequest('run/load', async (p) => {
    const dir = new RunDir(resolve(p.runDir));
    return summaryOf(dir.readManifest(), dir.dir);
  });
  conn.onRequest('layer/details', async (p) => layerDetails(p.runDir, p.layer, p.maxPoints));
  conn.onRequest('layer/requantize', async (p) => requantizeLayer(p.runDir, p.layer, p.overrides));
  conn.onRequest('layer/apply', async (p) => applyCandidate(p.runDir, p.layer, p.candidateId));
  conn.onRequest('run/eval', async (p, ctx) => evalPath(p.runDir, p.texts, { ctx: 0 }, hooksFor(conn, ctx)));
  conn.onRequest('run/export', async (p, ctx) => exportRun(p, hooksFor(conn, ctx)));
  conn.onRequest('generate', async (p, ctx) =>
    serveGenerate(generation, p, ctx.signal, (delta, tokens) => conn.sendNotification('generate/text', { requestId: ctx.id, delta, tokens })),
  );
  conn.onRequest('generate/release', async (p) => ({ released: generation.release(Array.isArray(p.paths) ? p.paths.filter((x) => typeof x === 'string') : []) }));
}
