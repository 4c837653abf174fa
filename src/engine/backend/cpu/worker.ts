// A worker thread of the CPU backend (pool.ts): runs the slices it is sent (tasks.ts) and says when each is done.

import { parentPort } from 'node:worker_threads';
import { runTask, type Task } from './tasks';

if (parentPort) {
  const port = parentPort;
  port.on('message', (m: { type: 'task'; task: Task }) => {
    try {
      runTask(m.task);
      port.postMessage({ type: 'taskDone' });
    } catch (e) {
      port.postMessage({ type: 'taskError', name: e instanceof Error ? e.name : 'Error', message: e instanceof Error ? e.message : String(e) });
    }
  });
}
