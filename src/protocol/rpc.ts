// A small typed JSON-RPC-like connection (vscode-jsonrpc's shape, without its weight):
// request → response typed by a request map, errors with codes, notifications, cancellation,
// timeouts, and every pending request rejected when the transport closes. Transport-agnostic:
// child_process IPC, an in-memory pair for tests, or a webview's postMessage.

import { ErrorCode, type ProtocolErrorData } from './messages';

export type Envelope =
  | { kind: 'request'; id: number; method: string; params: unknown }
  | { kind: 'response'; id: number; result: unknown }
  | { kind: 'error'; id: number; error: ProtocolErrorData }
  | { kind: 'notification'; method: string; params: unknown };

export interface Transport {
  send(message: Envelope): void;
  onMessage(listener: (message: unknown) => void): void;
  onClose(listener: (reason: string) => void): void;
}

/** An error that crosses the process boundary with its code intact. */
export class ProtocolError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly where?: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
  toData(): ProtocolErrorData {
    return { code: this.code, message: this.message, where: this.where, hint: this.hint };
  }
  static from(e: unknown): ProtocolError {
    if (e instanceof ProtocolError) return e;
    if (isErrorData(e)) return new ProtocolError(e.code, e.message, e.where, e.hint);
    const msg = e instanceof Error ? e.message : String(e);
    return new ProtocolError(ErrorCode.Internal, msg);
  }
}

function isErrorData(x: unknown): x is ProtocolErrorData {
  return typeof x === 'object' && x !== null && typeof (x as ProtocolErrorData).code === 'string' && typeof (x as ProtocolErrorData).message === 'string';
}

/** Structural check of an incoming message; anything else is dropped and logged, never trusted. */
export function parseEnvelope(x: unknown): Envelope | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const m = x as Record<string, unknown>;
  const isId = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0;
  switch (m.kind) {
    case 'request':
      return isId(m.id) && typeof m.method === 'string' ? (m as Envelope) : undefined;
    case 'response':
      return isId(m.id) && 'result' in m ? (m as Envelope) : undefined;
    case 'error':
      return isId(m.id) && isErrorData(m.error) ? (m as Envelope) : undefined;
    case 'notification':
      return typeof m.method === 'string' ? (m as Envelope) : undefined;
    default:
      return undefined;
  }
}

export interface RequestContext {
  id: number;
  /** Aborted when the peer sends `cancel` for this request or the connection closes. */
  signal: AbortSignal;
}

type ReqMap = Record<string, { params: unknown; result: unknown }>;
type NotMap = Record<string, unknown>;

interface Pending {
  resolve(v: unknown): void;
  reject(e: ProtocolError): void;
  timer?: ReturnType<typeof setTimeout>;
}

/**
 * One end of a connection. `In` is what this end serves, `Out` what it calls; notifications
 * use one shared map (each side sends the ones meant for the other).
 */
export class Connection<In extends ReqMap, Out extends ReqMap, N extends NotMap> {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly running = new Map<number, AbortController>();
  private readonly requestHandlers = new Map<string, (params: unknown, ctx: RequestContext) => Promise<unknown>>();
  private readonly notificationHandlers = new Map<string, ((params: unknown) => void)[]>();
  private closed: string | undefined;
  /** Called with messages that failed validation (for the log). */
  onInvalid: (raw: unknown, why: string) => void = () => {};

  constructor(private readonly transport: Transport) {
    transport.onMessage((raw) => this.receive(raw));
    transport.onClose((reason) => this.close(reason));
  }

  onRequest<M extends keyof In & string>(method: M, handler: (params: In[M]['params'], ctx: RequestContext) => Promise<In[M]['result']>): void {
    this.requestHandlers.set(method, handler as (p: unknown, c: RequestContext) => Promise<unknown>);
  }

  onNotification<M extends keyof N & string>(method: M, handler: (params: N[M]) => void): void {
    const list = this.notificationHandlers.get(method) ?? [];
    list.push(handler as (p: unknown) => void);
    this.notificationHandlers.set(method, list);
  }

  /** Sends a request; `signal` sends `cancel` to the peer; `timeoutMs` rejects with E_TIMEOUT. */
  sendRequest<M extends keyof Out & string>(
    method: M,
    params: Out[M]['params'],
    opts: { signal?: AbortSignal; timeoutMs?: number; onId?: (id: number) => void } = {},
  ): Promise<Out[M]['result']> {
    if (this.closed !== undefined) return Promise.reject(new ProtocolError(ErrorCode.EngineCrashed, `connection closed: ${this.closed}`));
    const id = this.nextId++;
    opts.onId?.(id);
    return new Promise<Out[M]['result']>((resolve, reject) => {
      const p: Pending = { resolve: resolve as (v: unknown) => void, reject };
      if (opts.timeoutMs) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          this.safeSend({ kind: 'notification', method: 'cancel', params: { requestId: id } });
          reject(new ProtocolError(ErrorCode.Timeout, `${method} timed out after ${opts.timeoutMs} ms`));
        }, opts.timeoutMs);
      }
      this.pending.set(id, p);
      opts.signal?.addEventListener('abort', () => this.safeSend({ kind: 'notification', method: 'cancel', params: { requestId: id } }), { once: true });
      this.safeSend({ kind: 'request', id, method, params });
    });
  }

  sendNotification<M extends keyof N & string>(method: M, params: N[M]): void {
    this.safeSend({ kind: 'notification', method, params });
  }

  get isClosed(): boolean {
    return this.closed !== undefined;
  }

  /** Rejects every pending request and aborts every running handler. Idempotent. */
  close(reason: string): void {
    if (this.closed !== undefined) return;
    this.closed = reason;
    for (const [, p] of this.pending) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(new ProtocolError(ErrorCode.EngineCrashed, `connection closed: ${reason}`));
    }
    this.pending.clear();
    for (const [, c] of this.running) c.abort();
    this.running.clear();
  }

  private safeSend(m: Envelope): void {
    if (this.closed !== undefined) return;
    try {
      this.transport.send(m);
    } catch (e) {
      this.close(`send failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private receive(raw: unknown): void {
    const m = parseEnvelope(raw);
    if (!m) {
      this.onInvalid(raw, 'not a protocol envelope');
      return;
    }
    switch (m.kind) {
      case 'request':
        void this.serve(m.id, m.method, m.params);
        return;
      case 'response':
      case 'error': {
        const p = this.pending.get(m.id);
        if (!p) return; // late answer to a timed-out request
        this.pending.delete(m.id);
        if (p.timer) clearTimeout(p.timer);
        if (m.kind === 'response') p.resolve(m.result);
        else p.reject(ProtocolError.from(m.error));
        return;
      }
      case 'notification': {
        if (m.method === 'cancel') {
          const id = (m.params as { requestId?: unknown } | null)?.requestId;
          if (typeof id === 'number') this.running.get(id)?.abort();
        }
        for (const h of this.notificationHandlers.get(m.method) ?? []) {
          try {
            h(m.params);
          } catch (e) {
            this.onInvalid(m, `notification handler threw: ${e instanceof Error ? e.message : String(e)}`);
          }
        }
        return;
      }
    }
  }

  private async serve(id: number, method: string, params: unknown): Promise<void> {
    const handler = this.requestHandlers.get(method);
    if (!handler) {
      this.safeSend({ kind: 'error', id, error: { code: ErrorCode.MethodNotFound, message: `no handler for ${method}` } });
      return;
    }
    const controller = new AbortController();
    this.running.set(id, controller);
    try {
      const result = await handler(params, { id, signal: controller.signal });
      this.safeSend({ kind: 'response', id, result: result === undefined ? null : result });
    } catch (e) {
      const err = controller.signal.aborted && !(e instanceof ProtocolError) ? new ProtocolError(ErrorCode.Cancelled, 'cancelled') : ProtocolError.from(e);
      this.safeSend({ kind: 'error', id, error: err.toData() });
    } finally {
      this.running.delete(id);
    }
  }
}

/** Two transports wired back to back, for tests and for the CLI's in-process engine. */
export function memoryTransportPair(): [Transport, Transport] {
  const make = () => {
    const listeners: ((m: unknown) => void)[] = [];
    const closers: ((r: string) => void)[] = [];
    return { listeners, closers };
  };
  const a = make(),
    b = make();
  // structuredClone mimics the copy a real process boundary makes.
  const deliver = (to: typeof a, m: Envelope) => queueMicrotask(() => to.listeners.forEach((l) => l(structuredClone(m))));
  const end = (x: typeof a, y: typeof a): Transport => ({
    send: (m) => deliver(y, m),
    onMessage: (l) => void x.listeners.push(l),
    onClose: (l) => void x.closers.push(l),
  });
  return [end(a, b), end(b, a)];
}
