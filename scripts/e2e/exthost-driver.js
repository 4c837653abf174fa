// Opens the workbench with ?payload=[extensionDevelopmentPath, extensionTestsPath] and waits for the
// extension host tests to call codeAutomationExit (the hook @vscode/test-web uses). From the offline recipe.
// Usage: node exthost-driver.js <code-server-url> <workspace-dir> <extensionDevelopmentPath> <extensionTestsPath(no .js)>
// code-server must run with --vscode-option enable-smoke-test-driver.
const { chromium } = require('playwright-core');
const fs = require('node:fs'),
  os = require('node:os'),
  path = require('node:path');

(async () => {
  const [url, ws, extDev, extTests] = process.argv.slice(2);
  const authority = new URL(url).host; // e.g. 127.0.0.1:8765
  const remote = (p) => `vscode-remote://${authority}${p}`; // files on the code-server host
  const payload = [
    ['extensionDevelopmentPath', remote(extDev)],
    ['extensionTestsPath', remote(extTests)],
  ];
  const target = `${url}/?folder=${encodeURIComponent(ws)}&payload=${encodeURIComponent(JSON.stringify(payload))}`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = ctx.pages()[0] || (await ctx.newPage());
  let done;
  const exited = new Promise((r) => (done = r));
  // The workbench calls these when an extension test run is active (same hooks @vscode/test-web uses)
  await page.exposeFunction('codeAutomationLog', (_type, args) => console.log(...args));
  await page.exposeFunction('codeAutomationExit', (code) => done(code));
  const timer = setTimeout(() => done('timeout'), Number(process.env.EXT_TEST_TIMEOUT_MS || 300000));
  await page.goto(target);
  const code = await exited;
  clearTimeout(timer);
  await ctx.close();
  fs.rmSync(profile, { recursive: true, force: true });
  console.log(`extension host exited with code ${code}`);
  process.exit(code === 0 ? 0 : 1);
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
