// `lopro` on the command line: argument parsing → run/. Progress lines go to stderr, results
// (tables, perplexities, JSON with --json) to stdout. A user error (bad file, bad flag) prints one
// line — code, message, where, hint — and exits 2; never a stack trace (LOPRO_DEBUG=1 shows it).

import {
  CHOICES,
  CONFIG_DOCS,
  DEFAULT_CONFIG,
  PRESET_NAMES,
  PRESETS,
  RANGES,
  describeRange,
  withPreset,
  type NumRange,
  type PresetName,
  type QuantizeConfig,
} from '../protocol/config';
import { ErrorCode, type GENERATE_BOUNDS, generateBoundProblem, type ExportFormat, type ProgressValue } from '../protocol/messages';
import { ProtocolError } from '../protocol/rpc';
import { configFromFlags, flagFor, kebab, parseArgs } from './run/args';
import { formatEta } from './run/progress';
import { ENGINE_VERSION } from './run/version';
import { inspectModel } from './run/inspect';
import { quantizeRun } from './run/pipeline';
import type { RunHooks } from './run/run_context';
import { evaluate } from './run/evaluate';
import { exportRun } from './run/exports';
import { formatLayerTable, formatModelSummary } from './run/report';
import { runDemo } from './run/demo';
import { formatPlan, planFromFile } from './plan/plan_report';
import { bpwForSize, parseSize } from './plan/target_size';
import { engineEnv } from './env';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const HELP = `lopro ${ENGINE_VERSION} — quantize LLM checkpoints with LoPRo, GPTQ or RTN

Usage:
  lopro quantize <file.safetensors | model-dir> --out DIR [options]
  lopro eval <run-dir | export-dir> --text FILE [--text FILE ...] [--ctx N] [--kl | --reference FLOAT_DIR]
  lopro export <run-dir> --format native|f16|onnx --out DIR [--verify-text FILE]
               [--float-activations] [--four-bit-container]   (onnx: exact activations; 2-bit codes as 4-bit)
  lopro inspect <file.safetensors | model-dir>
  lopro plan <measurements.json> --target-bpw X [--allocator exact|greedy] [--json]
  lopro generate <run-dir | export-dir | model-dir> --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P]
                 [--seed S] [--ep cpu|cuda|webgpu] [--json]
  lopro demo [--target-bpw X] [--samples N] [--method M] [--clip C] [--out DIR]   GPTQ and LoPRo at 2.25 bpw on the embedded tiny model
  lopro --help | --version

quantize:
  A bare .safetensors file is quantized data-free (H = I): every 2-D tensor, one line each.
  A model folder (config.json + safetensors; llama, mistral, qwen2, qwen3, mixtral, qwen2_moe,
  qwen3_moe) is quantized block by block on calibration text (--calib).
  --out DIR           run directory (checkpoints, reports, the native quantized model)
  --resume            continue from the last complete block of DIR (refused if incompatible)
  --eval FILE         after the run, perplexity of the exported model on FILE (repeatable) and the KL
                      divergence of its next-token distributions from the float model's
  --target-bpw X      the size to reach: measure each layer's candidates, then quantize each layer as the plan
                      with the least total error within X bits per weight chooses (DIR/measurements.json)
  --target-size SIZE  the same, as the output's size (7.5GB, 800MiB): embedding, head and norms at their width
  --measurements FILE reuse an earlier run's measurements.json (same model, calibration and settings)
  --preset NAME       start from a named set of layer settings (settings given as flags win):
                      authors = the LoPRo authors' code defaults (${presetLine()})
  --override "PATTERN:key=v,..."   per-layer settings, e.g. "*.down_proj:bits=3" (repeatable)
  --json              print the run summary as JSON
 Settings (defaults in brackets; every QuantizeConfig key):
${configHelp()}

generate:
  Continues the prompt with the model (a run's quantized model, an ONNX export, or a float model folder) through
  ONNX Runtime with a KV cache, streaming the text to stdout; prefill and decode tokens/s go to stderr. Stops at
  the model's end-of-sequence token or after --max-tokens [64]. --temperature 0 [default] is greedy; above 0 it
  samples from the smallest set of tokens whose probability reaches --top-p [1], seeded by --seed [0].

plan:
  The plan a target would get from a run's measurement, without measuring or quantizing: per layer the
  chosen method, bits and rank, the bits per weight reached and the summed layer error.

Exit codes: 0 ok, 2 bad input (message names the file, tensor or flag), 130 cancelled, 1 internal error.`;

function presetLine(): string {
  return Object.entries(PRESETS.authors)
    .map(([k, v]) => `${kebab(k)} ${v}`)
    .join(', ');
}

function configHelp(): string {
  const alias: Record<string, string> = { groupSize: ' (--group)', calibText: ' (--calib)', calibSamples: ' (--samples)', percDamp: ' (--damp)' };
  return (Object.keys(DEFAULT_CONFIG) as (keyof QuantizeConfig)[])
    .map((k) => {
      const v = DEFAULT_CONFIG[k];
      const choices = (CHOICES as Record<string, readonly unknown[]>)[k];
      const range = (RANGES as Record<string, NumRange>)[k];
      const allowed = choices ? `  ${choices.join('|')}` : range ? `  ${describeRange(range)}` : '';
      return `  --${kebab(k)}${alias[k] ?? ''} [${typeof v === 'object' ? JSON.stringify(v) : String(v)}]${allowed}\n      ${CONFIG_DOCS[k]}`;
    })
    .join('\n');
}

const BOOLEAN_FLAGS = new Set(['resume', 'json', 'help', 'version', 'quiet', 'kl', 'float-activations', 'four-bit-container']);
const VALUE_FLAGS = new Set([
  'out',
  'eval',
  'text',
  'format',
  'verify-text',
  'override',
  'reference',
  'measurements',
  'allocator',
  'target-size',
  'preset',
  'prompt',
  'max-tokens',
  'temperature',
  'top-p',
]);

/** --preset NAME (PRESET_NAMES); none when absent. */
function presetFlag(flags: Map<string, string[]>): PresetName {
  const p = last(flags, 'preset') ?? 'none';
  if (!(PRESET_NAMES as readonly string[]).includes(p))
    throw new ProtocolError(ErrorCode.InvalidParams, `--preset must be ${PRESET_NAMES.join(' or ')}, got "${p}"`, '--preset', 'lopro quantize --help lists the presets');
  return p as PresetName;
}

function last(flags: Map<string, string[]>, name: string): string | undefined {
  const v = flags.get(name);
  return v?.[v.length - 1];
}

function need(flags: Map<string, string[]>, name: string, cmd: string): string {
  const v = last(flags, name);
  if (!v) throw new ProtocolError(ErrorCode.InvalidParams, `lopro ${cmd} needs --${name}`, `--${name}`, `see \`lopro ${cmd} --help\``);
  return v;
}

function needPositional(pos: string[], cmd: string, what: string): string {
  if (pos.length !== 1) throw new ProtocolError(ErrorCode.InvalidParams, `lopro ${cmd} takes one ${what}, got ${pos.length}`, undefined, `usage: lopro ${cmd} <${what}> …`);
  return pos[0];
}

/** Progress lines on stderr: begin/end as they come, a report per layer (or tensor) with its ETA. */
function progressPrinter(quiet: boolean): (v: ProgressValue) => void {
  return (v) => {
    if (quiet) return;
    if (v.kind === 'begin') process.stderr.write(`${v.title}\n`);
    else if (v.kind === 'end') process.stderr.write(`${v.message ?? 'done'}\n`);
    else {
      const pct = v.percentage !== undefined ? `[${v.percentage.toFixed(1).padStart(5)}%] ` : '';
      const eta = v.etaSeconds !== undefined ? `  ETA ${formatEta(v.etaSeconds)}` : '';
      process.stderr.write(`${pct}${v.message ?? ''}${eta}\n`);
    }
  };
}

function cliHooks(quiet: boolean, signal: AbortSignal): RunHooks {
  return {
    signal,
    onProgress: progressPrinter(quiet),
    onLayerDone: () => {},
    log: (level, message) => {
      if (!quiet || level === 'warn' || level === 'error') process.stderr.write(`${level === 'info' ? '' : level + ': '}${message}\n`);
    },
  };
}

async function cmdQuantize(argv: string[], signal: AbortSignal): Promise<number> {
  const a = parseArgs(argv, BOOLEAN_FLAGS, VALUE_FLAGS);
  if (a.flags.has('help')) return printHelp();
  const modelPath = needPositional(a.positional, 'quantize', 'file.safetensors | model-dir');
  const runDir = need(a.flags, 'out', 'quantize');
  const size = last(a.flags, 'target-size');
  if (size !== undefined && a.config.targetBpw !== undefined)
    throw new ProtocolError(ErrorCode.InvalidParams, '--target-size and --target-bpw ask for the same thing twice', '--target-size', 'pass one of them');
  const asked = withPreset(presetFlag(a.flags), a.config);
  const config: QuantizeConfig = configFromFlags(size === undefined ? asked : { ...asked, targetBpw: bpwForSize(await inspectModel(modelPath), parseSize(size)) });
  if (size !== undefined) process.stderr.write(`--target-size ${size}: ${config.targetBpw} bits per weight for the quantized linears\n`);
  const quiet = a.flags.has('quiet');
  const summary = await quantizeRun(
    { modelPath, config, runDir, resume: a.flags.has('resume'), evalTexts: a.flags.get('eval') ?? [], measurementsPath: last(a.flags, 'measurements') },
    cliHooks(quiet, signal),
  );
  if (a.flags.has('json')) process.stdout.write(JSON.stringify(summary, null, 1) + '\n');
  else process.stdout.write(formatLayerTable(summary) + '\n');
  return 0;
}

async function cmdEval(argv: string[], signal: AbortSignal): Promise<number> {
  const a = parseArgs(argv, BOOLEAN_FLAGS, VALUE_FLAGS);
  if (a.flags.has('help')) return printHelp();
  const path = needPositional(a.positional, 'eval', 'run-or-export-dir');
  const texts = a.flags.get('text');
  if (!texts?.length) throw new ProtocolError(ErrorCode.InvalidParams, 'lopro eval needs --text FILE', '--text');
  const reference = a.flags.get('reference')?.[0];
  const klReference = reference ?? (a.flags.has('kl') ? '' : undefined);
  const r = await evaluate(path, texts, { ctx: a.config.ctx ?? 0, ep: a.config.ep, klReference }, cliHooks(a.flags.has('quiet'), signal));
  // --json: { text: ppl } as always; with --kl, { perplexity: {…}, kl: {…}, reference }.
  if (a.flags.has('json')) process.stdout.write(JSON.stringify(r.kl ? r : r.perplexity) + '\n');
  else
    for (const [t, p] of Object.entries(r.perplexity))
      process.stdout.write(`${t}\tperplexity ${p.toFixed(4)}${r.kl ? `\tKL ${r.kl[t].toFixed(5)} nats/token (from ${r.reference})` : ''}\n`);
  return 0;
}

/** A generation number from its flag (GENERATE_BOUNDS), or its default when absent. */
function generateFlag(flags: Map<string, string[]>, name: string, key: keyof typeof GENERATE_BOUNDS, dflt: number): number {
  const v = last(flags, name);
  if (v === undefined) return dflt;
  const x = Number(v);
  const problem = generateBoundProblem(key, x);
  if (problem) throw new ProtocolError(ErrorCode.InvalidParams, `--${name} must be ${problem}, got "${v}"`, `--${name}`);
  return x;
}

async function cmdGenerate(argv: string[], signal: AbortSignal): Promise<number> {
  const a = parseArgs(argv, BOOLEAN_FLAGS, VALUE_FLAGS);
  if (a.flags.has('help')) return printHelp();
  const path = needPositional(a.positional, 'generate', 'run-or-model-dir');
  const prompt = need(a.flags, 'prompt', 'generate');
  const maxTokens = generateFlag(a.flags, 'max-tokens', 'maxTokens', 64);
  const sampling = { temperature: generateFlag(a.flags, 'temperature', 'temperature', 0), topP: generateFlag(a.flags, 'top-p', 'topP', 1) };
  const { getRuntime } = await import('./compute/runtime');
  const { generate, openGenerationModel } = await import('./run/generate');
  const rt = await getRuntime(a.config.ep ?? 'auto');
  const m = await openGenerationModel(path, rt);
  const json = a.flags.has('json');
  // The prompt is echoed with the first piece of text, so that a refused generation prints only its error.
  let echoed = false;
  const echo = (t: string) => {
    if (!echoed) process.stdout.write(prompt);
    echoed = true;
    process.stdout.write(t);
  };
  const r = await generate(m, prompt, { maxTokens, sampling, seed: a.config.seed ?? 0, signal, onText: json ? undefined : echo });
  if (json) process.stdout.write(JSON.stringify({ model: m.dir, source: m.source, prompt, ...r }) + '\n');
  else {
    echo('\n');
    if (!a.flags.has('quiet'))
      process.stderr.write(
        `${m.source} ${m.dir}, EP ${r.ep}: prompt ${r.promptTokens} tokens, prefill ${r.prefillTokensPerSecond.toFixed(1)} tokens/s (${(r.prefillSeconds * 1000).toFixed(0)} ms); ` +
          `${r.tokens.length} tokens generated, decode ${r.decodeTokensPerSecond.toFixed(1)} tokens/s; stopped at ${r.stop === 'eos' ? 'end of sequence' : `--max-tokens ${maxTokens}`}\n`,
      );
  }
  return 0;
}

async function cmdExport(argv: string[], signal: AbortSignal): Promise<number> {
  const a = parseArgs(argv, BOOLEAN_FLAGS, VALUE_FLAGS);
  if (a.flags.has('help')) return printHelp();
  const runDir = needPositional(a.positional, 'export', 'run-dir');
  const format = need(a.flags, 'format', 'export');
  if (!['native', 'f16', 'onnx'].includes(format)) throw new ProtocolError(ErrorCode.InvalidParams, `unknown export format "${format}"`, '--format', 'one of native, f16, onnx');
  const outDir = need(a.flags, 'out', 'export');
  const onnx = { floatActivations: a.flags.has('float-activations'), fourBitContainer: a.flags.has('four-bit-container') };
  if ((onnx.floatActivations || onnx.fourBitContainer) && format !== 'onnx')
    throw new ProtocolError(ErrorCode.InvalidParams, '--float-activations and --four-bit-container apply to --format onnx only', '--format');
  const r = await exportRun({ runDir, format: format as ExportFormat, outDir, verifyText: last(a.flags, 'verify-text'), onnx }, cliHooks(a.flags.has('quiet'), signal));
  if (a.flags.has('json')) process.stdout.write(JSON.stringify(r) + '\n');
  else {
    process.stdout.write(`exported ${format} to ${r.outDir}: ${r.files.length} files, ${(r.bytes / 1e6).toFixed(2)} MB\n`);
    if (r.perplexity !== undefined)
      process.stdout.write(`verify: export perplexity ${r.perplexity.toFixed(4)}${r.runPerplexity !== undefined ? `, run ${r.runPerplexity.toFixed(4)}` : ''}\n`);
  }
  return 0;
}

async function cmdInspect(argv: string[]): Promise<number> {
  const a = parseArgs(argv, BOOLEAN_FLAGS, VALUE_FLAGS);
  if (a.flags.has('help')) return printHelp();
  const s = await inspectModel(needPositional(a.positional, 'inspect', 'path'));
  process.stdout.write((a.flags.has('json') ? JSON.stringify(s, null, 1) : formatModelSummary(s)) + '\n');
  return 0;
}

async function cmdDemo(argv: string[], signal: AbortSignal): Promise<number> {
  const a = parseArgs(argv, BOOLEAN_FLAGS, VALUE_FLAGS);
  if (a.flags.has('help')) return printHelp();
  const c = configFromFlags({ method: 'lopro', bits: 2, calibSamples: 128, targetBpw: 2.25, clip: 'mse', ...a.config });
  const out = last(a.flags, 'out') ?? join(tmpdir(), 'lopro-demo');
  const o = { out, samples: c.calibSamples, method: c.method, bits: c.bits, targetBpw: c.targetBpw, clip: c.clip, ep: a.config.ep ?? 'cpu' };
  await runDemo(o, cliHooks(a.flags.has('quiet'), signal), (s) => process.stdout.write(s + '\n'));
  return 0;
}

function cmdPlan(argv: string[]): number {
  const a = parseArgs(argv, BOOLEAN_FLAGS, VALUE_FLAGS);
  if (a.flags.has('help')) return printHelp();
  const file = needPositional(a.positional, 'plan', 'measurements.json');
  const target = Number(a.config.targetBpw ?? Number.NaN);
  if (!(target > 0)) throw new ProtocolError(ErrorCode.InvalidParams, 'lopro plan needs --target-bpw X (X > 0)', '--target-bpw', 'e.g. --target-bpw 2.25');
  const allocator = last(a.flags, 'allocator') ?? 'exact';
  if (allocator !== 'exact' && allocator !== 'greedy') throw new ProtocolError(ErrorCode.InvalidParams, `--allocator must be exact or greedy, got "${allocator}"`, '--allocator');
  const r = planFromFile(file, target, allocator);
  if (a.flags.has('json')) process.stdout.write(JSON.stringify(r, null, 1) + '\n');
  else process.stdout.write(formatPlan(r) + '\n');
  return 0;
}

function printHelp(): number {
  process.stdout.write(HELP + '\n');
  return 0;
}

/**
 * A config error names the field (`hadamardBlock`, the engine checks configs for every client):
 * on the command line, say the flag that sets it instead.
 */
function asFlagError(e: ProtocolError): ProtocolError {
  const flag = e.code === ErrorCode.BadConfig && e.where ? flagFor(e.where) : undefined;
  return flag ? new ProtocolError(e.code, e.message, flag, e.hint ?? 'see `lopro quantize --help`') : e;
}

/** One line for a user: `lopro: E_BAD_CHECKPOINT: message [where] (hint: …)`. */
export function formatUserError(e: ProtocolError): string {
  return `lopro: ${e.code}: ${e.message}${e.where ? ` [${e.where}]` : ''}${e.hint ? ` (hint: ${e.hint})` : ''}`;
}

export async function runCli(argv: string[]): Promise<number> {
  const ac = new AbortController();
  const onSigint = () => {
    if (ac.signal.aborted) process.exit(130);
    process.stderr.write('\ncancelling after the current layer (Ctrl-C again to stop now)…\n');
    ac.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    const [cmd, ...rest] = argv;
    switch (cmd) {
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        return printHelp();
      case '--version':
        process.stdout.write(ENGINE_VERSION + '\n');
        return 0;
      case 'quantize':
        return await cmdQuantize(rest, ac.signal);
      case 'eval':
        return await cmdEval(rest, ac.signal);
      case 'export':
        return await cmdExport(rest, ac.signal);
      case 'inspect':
        return await cmdInspect(rest);
      case 'demo':
        return await cmdDemo(rest, ac.signal);
      case 'plan':
        return cmdPlan(rest);
      case 'generate':
        return await cmdGenerate(rest, ac.signal);
      default:
        throw new ProtocolError(ErrorCode.InvalidParams, `unknown command "${cmd}"`, undefined, 'commands: quantize, eval, export, generate, inspect, plan, demo (lopro --help)');
    }
  } catch (e) {
    if (engineEnv().debug) console.error(e);
    if (e instanceof ProtocolError && e.code !== ErrorCode.Internal) {
      process.stderr.write(formatUserError(asFlagError(e)) + '\n');
      return e.code === ErrorCode.Cancelled ? 130 : 2;
    }
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`lopro: ${ErrorCode.Internal}: ${msg} (this is a bug; LOPRO_DEBUG=1 shows the stack)\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
