// The benches' command lines: `--name value` options taken out of the argument list (what remains is positional).

/** Removes `--name value` from `args` and returns the value, or `dflt` when the option is absent. */
export function takeOption(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  if (i + 1 >= args.length) throw new Error(`--${name} needs a value`);
  return args.splice(i, 2)[1];
}
