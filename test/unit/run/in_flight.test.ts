// inOrderInFlight: results taken in the items' order whatever order the work finishes in, never more than `limit`
// started and unconsumed, and a failure (of the work, of a consumer, of the pre-start check) thrown only once
// everything started has settled, with nothing started after it.

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
