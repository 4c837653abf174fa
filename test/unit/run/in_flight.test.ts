// inOrderInFlight: results taken in the items' order whatever order the work finishes in, never more than `limit`
// started and unconsumed, and a failure (of the work, of a consumer, of the pre-start check) thrown only once
// everything started has settled, with nothing started after it; an item that failed beside others retried alone.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inOrderInFlight } from '../../../src/engine/run/in_flight';
import { mulberry32 } from '../../../src/engine/util/random';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('results in order, at most `limit` in flight, each item started once', async () => {
  const r = mulberry32(3);
  for (const limit of [1, 2, 3, 8]) {
    const items = Array.from({ length: 9 }, (_, i) => i);
    let running = 0,
      most = 0;
    const started: number[] = [],
      consumed: number[] = [];
    await inOrderInFlight(
      items,
      limit,
      async (i) => {
        started.push(i);
        running++;
        most = Math.max(most, running);
        await sleep(1 + Math.floor(r() * 6));
        return i * 10;
      },
      async (res, i) => {
        assert.equal(res, i * 10);
        consumed.push(i);
        running--; // a result holds its slot until it is consumed
        await sleep(Math.floor(r() * 3));
      },
    );
    assert.deepEqual(consumed, items);
    assert.deepEqual(started, items);
    assert.equal(most, Math.min(limit, items.length), `limit ${limit}`);
  }
});

test('a failing item: thrown after the started ones settle, nothing started after it, earlier results consumed', async () => {
  const settled: number[] = [],
    started: number[] = [],
    consumed: number[] = [];
  await assert.rejects(
    inOrderInFlight(
      [0, 1, 2, 3, 4, 5],
      3,
      async (i) => {
        started.push(i);
        await sleep(i === 1 ? 1 : 15);
        settled.push(i);
        if (i === 1) throw new Error('item 1 failed');
        return i;
      },
      async (res) => {
        consumed.push(res);
      },
    ),
    /item 1 failed/,
  );
  assert.deepEqual(consumed, [0]);
  assert.deepEqual(started, [0, 1, 2, 3]); // item 3 was started when item 0 was consumed; none after the failure
  assert.deepEqual([...settled].sort(), [0, 1, 2, 3]);
});

test('a failing consumer or pre-start check (a cancel) stops the starts and waits for the started ones', async () => {
  let settled = 0;
  const work = async (i: number) => {
    await sleep(5);
    settled++;
    return i;
  };
  await assert.rejects(
    inOrderInFlight([0, 1, 2, 3], 2, work, async (i) => {
      if (i === 0) throw new Error('consumer failed');
    }),
    /consumer failed/,
  );
  assert.equal(settled, 2);
  settled = 0;
  let checks = 0;
  await assert.rejects(
    inOrderInFlight(
      [0, 1, 2, 3],
      2,
      work,
      async () => {},
      () => {
        if (++checks === 3) throw new Error('cancelled');
      },
    ),
    /cancelled/,
  );
  assert.equal(settled, 2);
});

// A device that holds one item's buffers but not three: an item fails only while others are unfinished beside it.
test('retryAlone: an item that failed beside others runs again alone, the rest one at a time, results in order', async () => {
  let running = 0;
  const started: number[] = [],
    consumed: number[] = [],
    retried: number[] = [];
  const runningAtStart: number[] = [];
  await inOrderInFlight(
    [0, 1, 2, 3, 4, 5],
    3,
    async (i) => {
      started.push(i);
      runningAtStart.push(running);
      running++;
      try {
        await sleep(3);
        if (running > 1 && i === 2) throw new Error('out of memory');
        return i * 10;
      } finally {
        running--;
      }
    },
    async (res, i) => {
      assert.equal(res, i * 10);
      consumed.push(i);
    },
    () => {},
    (e, i) => {
      retried.push(i);
      return /out of memory/.test(String(e));
    },
  );
  assert.deepEqual(consumed, [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(retried, [2]);
  // 2 was started twice (beside 0 and 1 or 3 and 4, then alone); everything started after the retry ran alone.
  assert.equal(started.filter((i) => i === 2).length, 2);
  const retryAt = started.lastIndexOf(2);
  assert.equal(runningAtStart[retryAt], 0, 'the retry runs alone');
  for (let k = retryAt; k < started.length; k++) assert.equal(runningAtStart[k], 0, `item ${started[k]} started alone`);
});

test('retryAlone: a failure alone again is thrown; one declined, or of an item started alone, is not retried', async () => {
  let calls = 0;
  await assert.rejects(
    inOrderInFlight(
      [0, 1, 2],
      3,
      async (i) => {
        calls++;
        await sleep(1);
        if (i === 1) throw new Error('bad layer');
        return i;
      },
      async () => {},
      () => {},
      () => true,
    ),
    /bad layer/,
  );
  assert.equal(calls, 4, 'three started, item 1 once more, alone');
  calls = 0;
  await assert.rejects(
    inOrderInFlight(
      [0, 1, 2],
      3,
      async (i) => {
        calls++;
        if (i === 1) throw new Error('cancelled');
        return i;
      },
      async () => {},
      () => {},
      (e) => !/cancelled/.test(String(e)),
    ),
    /cancelled/,
  );
  assert.equal(calls, 3, 'declined: no retry');
  calls = 0;
  await assert.rejects(
    inOrderInFlight(
      [0, 1],
      1,
      async () => {
        calls++;
        throw new Error('out of memory');
      },
      async () => {},
      () => {},
      () => true,
    ),
    /out of memory/,
  );
  assert.equal(calls, 1, 'started alone: nothing to gain from a retry');
});
