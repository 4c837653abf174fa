// The Dawn (WebGPU) device for the fused-kernel tests: SwiftShader, the Vulkan-on-CPU driver Debian's
// chromium ships (scripts/setup-swiftshader.sh installs it), unless VK_ICD_FILENAMES names another ICD.
// Without a device the tests skip — unless LOPRO_REQUIRE_DAWN=1 (npm test sets it): then a missing device fails them.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type { DawnGpu } from '../../src/engine/backend/gpu/dawn';

const SWIFTSHADER = '/usr/lib/chromium/vk_swiftshader_icd.json';
if (!process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER)) process.env.VK_ICD_FILENAMES = SWIFTSHADER;

/** The process's Dawn device (created after the environment above is set). */
export const dawnP = import('../../src/engine/backend/gpu/dawn').then((m) => m.getDawnGpu());
after(async () => (await dawnP).gpu?.destroy());

/** The device, or null after t.skip (or a failure when LOPRO_REQUIRE_DAWN=1). */
export async function testDawn(t: { skip: (why: string) => void }): Promise<DawnGpu | null> {
  const { gpu, reason } = await dawnP;
  if (gpu) return gpu;
  if (process.env.LOPRO_REQUIRE_DAWN === '1') assert.fail(`no Dawn device: ${reason}`);
  t.skip(`no Dawn device: ${reason}`);
  return null;
}
