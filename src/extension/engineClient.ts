// The engine child process seen from the extension host: fork dist/engine.js with IPC
// (structured clone, so typed arrays cross without JSON), one typed Connection over it, engine log
// lines into the output channel, progress into `withProgress`, cancel with a 2 s deadline, and a
// crash (exit with requests pending) turned into a clear error the caller can offer to resume.

import { engineEnv } from '../protocol/engine_env';
import { fork, type ChildProcess } from 'node:child_process';
import * as vscode from 'vscode';
import { Connection, ProtocolError, type Envelope, type Transport } from '../protocol/rpc';
import { ErrorCode, type EngineNotifications, type EngineRequests, type LayerReport, type ProgressValue } from '../protocol/messages';

/** How long a cancelled request may take to settle before the engine is killed. */
export const CANCEL_DEADLINE_MS = 2000;

// Mapped copies: interfaces have no index signature, so they do not satisfy Connection's Record bounds.
type Called = { [K in keyof EngineRequests]: EngineRequests[K] };
type Notes = { [K in keyof EngineNotifications]: EngineNotifications[K] };
type HostConnection = Connection<Record<string, never>, Called, Notes>;

/** Transport over a forked child's IPC channel (`process.send` on the other side). */
function childTransport(child: ChildProcess): Transport {
  return {
    send: (m: Envelope) => {
      if (!child.connected) throw new Error('engine IPC channel is closed');
      child.send(m);
    },
    onMessage: (l) => void child.on('message', l),
    onClose: (l) => {
      child.on('exit', (code, signal) => l(signal ? `engine killed by ${signal}` : `engine exited with code ${code}`));
      child.on('error', (e) => l(`engine process error: ${e.message}`));
    },
  };
}

export interface RunCallbacks {
  onProgress?(value: ProgressValue): void;
  onLayerDone?(report: LayerReport): void;
  /** A `generate` request's new text, and the tokens it has generated so far. */
  onText?(delta: string, tokens: number): void;
}

export class EngineClient implements vscode.Disposable {
  private child: ChildProcess | undefined;
  private conn: HostConnection | undefined;
  private lastExit = '';
  /** Request id → the callbacks of the request that owns it (progress, layer/done and generate/text carry the id). */
  private readonly listeners = new Map<number, RunCallbacks>();
  /** How the last cancel ended: ms from cancel to the request settling, and whether the engine was killed. */
  lastCancel: { method: string; ms: number; killed: boolean } | undefined;

  constructor(
    private readonly enginePath: string,
    private readonly log: vscode.OutputChannel,
  ) {}

  get running(): boolean {
    return !!this.conn && !this.conn.isClosed;
  }

  /** The live connection, forking the engine on first use (and after a crash). */
  connection(): HostConnection {
    if (this.conn && !this.conn.isClosed) return this.conn;
    const child = fork(this.enginePath, [], {
      serialization: 'advanced',
      execPath: process.execPath,
      // Not the extension host's own flags (a debugger's --inspect, loaders): the engine runs as the CLI does.
      execArgv: [],
      // ELECTRON_RUN_AS_NODE: on desktop VS Code process.execPath is Electron; in code-server it is Node.
      // engineEnv: transparent huge pages for the engine's large arrays (protocol/engine_env.ts says why).
      env: { ...engineEnv(process.env), LOPRO_ENGINE_IPC: '1', ELECTRON_RUN_AS_NODE: '1' },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    this.log.appendLine(`[host] engine started: pid ${child.pid} (${this.enginePath})`);
    child.stdout?.on('data', (d: Buffer) => this.log.append(d.toString()));
    child.stderr?.on('data', (d: Buffer) => this.log.append(d.toString()));
    child.on('exit', (code, signal) => {
      this.lastExit = signal ? `killed by ${signal}` : `exit code ${code}`;
      this.log.appendLine(`[host] engine ${child.pid} ended (${this.lastExit})`);
      if (this.child === child) this.child = undefined;
    });
    const conn: HostConnection = new Connection(childTransport(child));
    conn.onInvalid = (raw, why) => this.log.appendLine(`[host] dropped engine message (${why}): ${String(JSON.stringify(raw)).slice(0, 200)}`);
    conn.onNotification('log', ({ level, message }) => this.log.appendLine(`[engine ${level}] ${message}`));
    conn.onNotification('progress', ({ requestId, value }) => this.listeners.get(requestId)?.onProgress?.(value));
    conn.onNotification('layer/done', ({ requestId, report }) => this.listeners.get(requestId)?.onLayerDone?.(report));
    conn.onNotification('generate/text', ({ requestId, delta, tokens }) => this.listeners.get(requestId)?.onText?.(delta, tokens));
    this.child = child;
    this.conn = conn;
    return conn;
  }

  /**
   * Sends a request and routes its progress / layer notifications to `callbacks`. When `signal`
   * aborts, the engine gets `cancel`; if the request has not settled CANCEL_DEADLINE_MS later the
   * engine is killed (the pending request then rejects with E_ENGINE_CRASHED, reported as cancelled).
   */
  async request<M extends keyof EngineRequests & string>(
    method: M,
    params: EngineRequests[M]['params'],
    opts: { signal?: AbortSignal; timeoutMs?: number; callbacks?: RunCallbacks } = {},
  ): Promise<EngineRequests[M]['result']> {
    const conn = this.connection();
    const child = this.child;
    let id = -1;
    let killTimer: ReturnType<typeof setTimeout> | undefined;
    let cancelledAt = 0,
      killed = false;
    const onAbort = () => {
      cancelledAt = Date.now();
      this.log.appendLine(`[host] cancelling ${method} (request ${id}); the engine has ${CANCEL_DEADLINE_MS} ms`);
      killTimer = setTimeout(() => {
        this.log.appendLine(`[host] engine did not end ${method} within ${CANCEL_DEADLINE_MS} ms: killing pid ${child?.pid}`);
        killed = true;
        child?.kill('SIGKILL');
      }, CANCEL_DEADLINE_MS);
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await conn.sendRequest(method, params, {
        signal: opts.signal,
        timeoutMs: opts.timeoutMs,
        onId: (i) => {
          id = i;
          if (opts.callbacks) this.listeners.set(i, opts.callbacks);
        },
      });
    } catch (e) {
      const err = ProtocolError.from(e);
      if (opts.signal?.aborted) throw new ProtocolError(ErrorCode.Cancelled, `${method} cancelled`, err.where, err.hint);
      if (err.code === ErrorCode.EngineCrashed) {
        throw new ProtocolError(
          ErrorCode.EngineCrashed,
          `The LoPRo engine stopped during ${method} (${this.lastExit || err.message}).`,
          err.where,
          'See the "LoPRo" output channel for its log.',
        );
      }
      throw err;
    } finally {
      if (cancelledAt) {
        this.lastCancel = { method, ms: Date.now() - cancelledAt, killed };
        this.log.appendLine(`[host] ${method} ended ${this.lastCancel.ms} ms after cancel${killed ? ' (engine killed)' : ''}`);
      }
      if (killTimer) clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      this.listeners.delete(id);
    }
  }

  /** Ends the engine: closes IPC (the engine exits when its channel closes), then kills after 2 s. */
  dispose(): void {
    const child = this.child;
    this.conn?.close('extension disposed');
    this.conn = undefined;
    if (!child) return;
    try {
      child.disconnect();
    } catch {
      /* already disconnected */
    }
    const t = setTimeout(() => child.kill('SIGKILL'), CANCEL_DEADLINE_MS);
    child.once('exit', () => clearTimeout(t));
  }
}

/**
 * Runs `work` under a cancellable notification; progress values from the engine drive it. The
 * notification's Cancel and any other canceller (LoPRo: Cancel, the status bar) share `controller`.
 */
export function withEngineProgress<T>(title: string, controller: AbortController, work: (signal: AbortSignal, report: (v: ProgressValue) => void) => Promise<T>): Thenable<T> {
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (progress, token) => {
    token.onCancellationRequested(() => controller.abort());
    let last = 0;
    const report = (v: ProgressValue) => {
      if (v.kind === 'end') return;
      const pct = v.percentage;
      const increment = pct !== undefined && pct > last ? pct - last : undefined;
      if (pct !== undefined) last = Math.max(last, pct);
      const eta = v.kind === 'report' && v.etaSeconds !== undefined ? ` (about ${Math.ceil(v.etaSeconds)} s left)` : '';
      progress.report({ message: (v.message ?? '') + eta, increment });
    };
    return work(controller.signal, report);
  });
}
