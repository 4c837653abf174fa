// A worker thread of the engine: the CPU backend's slices (pool.ts, tasks.ts), answered with taskDone/taskError; and
// reads of checkpoint tensors as float32 (run/read_ahead.ts), answered with their arrays transferred, not copied.

import { parentPort } from 'node:worker_threads';
import { runTask, type Task } from './tasks';
import { readTensorsF32, type TensorRead } from '../../io/tensor_reads';

type Message = { type: 'task'; task: Task } | { type: 'read'; id: number; reads: TensorRead[] };

const failure = (e: unknown) => ({ name: e instanceof Error ? e.name : 'Error', message: e instanceof Error ? e.message : String(e) });

if (parentPort) {
  const port = parentPort;
  port.on('message', (m: Message) => {
    if (m.type === 'read') {
      try {
        const out = readTensorsF32(m.reads);
        port.postMessage(
          { type: 'readDone', id: m.id, out },
          out.map((r) => r.data.buffer as ArrayBuffer),
        );
      } catch (e) {
        port.postMessage({ type: 'readError', id: m.id, ...failure(e) });
      }
      return;
    }
    try {
      runTask(m.task);
      port.postMessage({ type: 'taskDone' });
    } catch (e) {
      port.postMessage({ type: 'taskError', ...failure(e) });
    }
  });
}
