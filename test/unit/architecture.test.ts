// The house rules that `npm test` enforces beyond the type checker:
//  - dependency-cruiser (.dependency-cruiser.cjs): no import cycles, engine folders in layers, protocol a leaf,
//    the webview and the host on their sides of the protocol, no *_ref.ts module imported by production code,
//    benches never importing tests, no orphan source files;
//  - no production function calls a float64 twin (`*_ref(`), even one defined in the same file as its kernel;
//  - every environment variable the engine reads is read in src/engine/env.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '../..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

test('dependency rules hold (dependency-cruiser)', () => {
  const r = spawnSync(
    process.execPath,
    [join(ROOT, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs'), 'src', 'webview', 'bench', 'test', '--config', '.dependency-cruiser.cjs'],
    { cwd: ROOT, encoding: 'utf8' },
  );
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /no dependency violations found/);
});

test('production code calls no float64 twin (a *_ref function) outside the twins themselves', () => {
  const offences: string[] = [];
  for (const file of sources(join(ROOT, 'src'))) {
    if (file.endsWith('_ref.ts')) continue;
    let inside = ''; // the top-level function the line belongs to
    readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        const def = /^(?:export )?(?:async )?function\*? (\w+)/.exec(line);
        if (def) inside = def[1];
        else if (/^\S/.test(line) && !/^[})\]]/.test(line)) inside = '';
        for (const m of line.matchAll(/\b(\w+_ref)\(/g))
          if (!inside.endsWith('_ref') && !def?.[1].endsWith('_ref')) offences.push(`${file.slice(ROOT.length + 1)}:${i + 1} calls ${m[1]}`);
      });
  }
  assert.deepEqual(offences, []);
});

test('the engine reads LOPRO_* environment variables only in src/engine/env.ts (at most 10 of them)', () => {
  const readers: string[] = [];
  const names = new Set<string>();
  for (const file of sources(join(ROOT, 'src', 'engine'))) {
    const text = readFileSync(file, 'utf8');
    if (/process\.env\.LOPRO_|process\.env\[['"]LOPRO_/.test(text) && !file.endsWith(join('engine', 'env.ts'))) readers.push(file.slice(ROOT.length + 1));
  }
  for (const m of readFileSync(join(ROOT, 'src/engine/env.ts'), 'utf8').matchAll(/env\.(LOPRO_\w+)/g)) names.add(m[1]);
  assert.deepEqual(readers, []);
  assert.ok(names.size > 0 && names.size <= 10, `${names.size} variables: ${[...names].join(', ')}`);
  // The README lists every one of them.
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  for (const n of names) assert.ok(readme.includes(n), `README does not list ${n}`);
});
