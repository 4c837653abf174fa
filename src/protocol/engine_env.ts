// The environment the host starts the engine with (extension/engineClient.ts; bench/device scripts do the same).
//
// glibc.malloc.hugetlb=1 makes glibc's malloc back its large (mmap'd) blocks with transparent huge pages
// (madvise mode, the common kernel default). The engine allocates many 50–500 MB typed arrays per layer
// (weights, Hessians, Ŵ, copies to and from the GPU), and with 4 KiB pages their first touch cost more than
// the work on them: a fresh 180 MB Float32Array filled at ~1.1 GB/s against ~7 GB/s for a reused one (the
// H100 host, bench/dawn_copy_probe.ts). Measured on the 7B-shaped 2-block pipeline, same lease: 59.8 s → 38.8 s
// (bench/RESULTS.md, session 6). Unknown tunables are ignored (glibc < 2.35, musl, macOS, Windows), so this is
// safe everywhere. LOPRO_HUGEPAGES=off leaves the environment as it is.

/** `env` plus glibc.malloc.hugetlb=1 in GLIBC_TUNABLES (kept as is when it names hugetlb already). */
export function engineEnv(env: Record<string, string | undefined>): Record<string, string | undefined> {
  if (env.LOPRO_HUGEPAGES === 'off') return { ...env };
  const t = env.GLIBC_TUNABLES ?? '';
  if (/(^|:)glibc\.malloc\.hugetlb=/.test(t)) return { ...env };
  return { ...env, GLIBC_TUNABLES: t ? `${t}:glibc.malloc.hugetlb=1` : 'glibc.malloc.hugetlb=1' };
}
