// The environment the host starts the engine with (extension/engineClient.ts; bench/device scripts do the same).
//
// glibc.malloc.hugetlb=1 makes glibc's malloc back its large (mmap'd) blocks with transparent huge pages
// (madvise mode, the common kernel default). The engine allocates many 50–500 MB typed arrays per layer
// (weights, Hessians, Ŵ, copies to and from the GPU), and with 4 KiB pages their first touch costs more than
// the work on them (bench/dawn_copy_probe.ts; the 7B-shaped pipeline's numbers are in bench/RESULTS.md).
// Unknown tunables are ignored (glibc < 2.35, musl, macOS, Windows), so this is safe everywhere.
// LOPRO_HUGEPAGES=off leaves the environment as it is.

/** `env` plus glibc.malloc.hugetlb=1 in GLIBC_TUNABLES (kept as is when it names hugetlb already). */
export function engineEnv(env: Record<string, string | undefined>): Record<string, string | undefined> {
  if (env.LOPRO_HUGEPAGES === 'off') return { ...env };
  const t = env.GLIBC_TUNABLES ?? '';
  if (/(^|:)glibc\.malloc\.hugetlb=/.test(t)) return { ...env };
  return { ...env, GLIBC_TUNABLES: t ? `${t}:glibc.malloc.hugetlb=1` : 'glibc.malloc.hugetlb=1' };
}
