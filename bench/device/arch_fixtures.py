"""Small fixture models of the families the engine runs, made and measured by transformers itself (seeded).

  make OUT       Qwen2 (q/k/v biases, a sliding-window layer), Mistral (sliding window), Qwen3 (q/k norms, o bias),
                 Mixtral (4 experts), Qwen2-MoE (shared expert, a dense layer), Qwen3-MoE (6 experts, renormalised):
                 each trained briefly on fixtures/text/train.txt with the tiny tokenizer, saved in BF16 as
                 save_pretrained writes it (published per-expert names), then reloaded in float32 and measured:
                 perplexity on both texts (protocol: ctx 256, non-overlapping windows) and, per MoE layer, the
                 calibration tokens routed to each expert by the float model (128 protocol windows of 256).
                 Writes OUT/<name>/ and OUT/references.json.
  check JSON DIR...  loads each folder with AutoModelForCausalLM (an engine export) and prints its class and
                 perplexities: an F16 export must load as the original class and give the engine's numbers.

Runs on a CPU too (torch + transformers): python bench/device/arch_fixtures.py make OUT [--steps 400]
"""
import json, math, os, shutil, sys, time

import torch
import transformers as T
from tokenizers import Tokenizer

TOK_DIR = 'fixtures/tiny'
CTX = 256
TEXTS = ['fixtures/text/persuasion.txt', 'fixtures/text/jargon_tail.txt']
DEV = 'cuda' if torch.cuda.is_available() else 'cpu'

COMMON = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
              bos_token_id=0, eos_token_id=0, pad_token_id=None)

FAMILIES = {
    # layer 1 slides (max_window_layers 1), window 32 < ctx: the window matters in every evaluation window
    'qwen2s': lambda: T.Qwen2Config(**COMMON, use_sliding_window=True, sliding_window=32, max_window_layers=1),
    'mistrals': lambda: T.MistralConfig(**COMMON, sliding_window=48),
    'qwen3b': lambda: T.Qwen3Config(**COMMON, head_dim=24, attention_bias=True),
    'mixtralt': lambda: T.MixtralConfig(**{**COMMON, 'intermediate_size': 64}, num_local_experts=4, num_experts_per_tok=2),
    'qwen2moes': lambda: T.Qwen2MoeConfig(**COMMON, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                          shared_expert_intermediate_size=64, mlp_only_layers=[0], norm_topk_prob=False),
    'qwen3moes': lambda: T.Qwen3MoeConfig(**COMMON, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=32,
                                          head_dim=16, norm_topk_prob=True),
}


def tokens(path):
    tok = Tokenizer.from_file(os.path.join(TOK_DIR, 'tokenizer.json'))
    return tok.encode(open(path, encoding='utf-8').read(), add_special_tokens=False).ids


def load(path):
    kw = dict(dtype=torch.float32, attn_implementation='eager')
    try:
        return T.AutoModelForCausalLM.from_pretrained(path, experts_implementation='eager', **kw)
    except TypeError:
        return T.AutoModelForCausalLM.from_pretrained(path, **kw)


@torch.no_grad()
def perplexity(model, ids):
    n = len(ids) // CTX
    x = torch.tensor(ids[:n * CTX], device=DEV).view(n, CTX)
    total, count = 0.0, 0
    for i in range(0, n, 32):
        b = x[i:i + 32]
        logits = model(input_ids=b).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction='sum')
        total += nll.item()
        count += b.shape[0] * (CTX - 1)
    return math.exp(total / count), n


@torch.no_grad()
def routed_counts(model, cfg, ids):
    """Calibration tokens each expert of each sparse layer receives from the float model (protocol windows)."""
    n, Tn = 128, len(ids)
    wins = torch.tensor([ids[(i * (Tn - CTX)) // n:(i * (Tn - CTX)) // n + CTX] for i in range(n)], device=DEV)
    counts, hooks = {}, []
    for li, layer in enumerate(model.model.layers):
        mlp = layer.mlp
        if not hasattr(mlp, 'gate') or not hasattr(mlp, 'experts'):
            continue
        k = cfg.num_experts_per_tok

        def pre(mod, args, li=li, k=k):
            h = args[0].reshape(-1, args[0].shape[-1]).float()
            p = torch.softmax(h @ mod.gate.weight.float().T, dim=-1)
            idx = torch.topk(p, k, dim=-1).indices
            c = torch.bincount(idx.reshape(-1), minlength=p.shape[-1])
            counts[li] = [a + int(b) for a, b in zip(counts.get(li, [0] * p.shape[-1]), c.tolist())]
        hooks.append(mlp.register_forward_pre_hook(pre))
    for i in range(0, n, 32):
        model(input_ids=wins[i:i + 32])
    for h in hooks:
        h.remove()
    return counts


def make(out, steps):
    torch.manual_seed(0)
    train = tokens('fixtures/text/train.txt')
    texts = {os.path.basename(t)[:-4]: tokens(t) for t in TEXTS}
    refs_file = os.path.join(out, 'references.json')
    # Models already measured in OUT are kept (a long CPU run can be resumed model by model).
    refs = json.load(open(refs_file)) if os.path.exists(refs_file) else {
        'steps': steps, 'transformers': T.__version__, 'torch': torch.__version__,
        'device': torch.cuda.get_device_name() if DEV == 'cuda' else 'cpu', 'ctx': CTX, 'train_tokens': len(train), 'models': {}}
    data = torch.tensor(train, device=DEV)
    for name, make_cfg in FAMILIES.items():
        if name in refs['models']:
            continue
        t0 = time.time()
        torch.manual_seed(1234)
        cfg = make_cfg()
        model = T.AutoModelForCausalLM.from_config(cfg, attn_implementation='eager').to(DEV)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        B = 32
        g = torch.Generator(device='cpu').manual_seed(99)
        model.train()
        for step in range(steps):
            starts = torch.randint(0, len(train) - CTX - 1, (B,), generator=g)
            batch = torch.stack([data[s:s + CTX] for s in starts.tolist()])
            lr = 3e-3 * min(1.0, (step + 1) / 40) * (0.5 * (1 + math.cos(math.pi * step / steps)))
            for grp in opt.param_groups:
                grp['lr'] = lr
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        model.eval()
        d = os.path.join(out, name)
        model.to(torch.bfloat16).save_pretrained(d)
        for f in ['tokenizer.json', 'tokenizer_config.json']:
            shutil.copy(os.path.join(TOK_DIR, f), d)
        from safetensors import safe_open
        with safe_open(os.path.join(d, 'model.safetensors'), 'pt') as f:
            names = sorted(f.keys())
        m = load(d).to(DEV).eval()
        entry = {'class': type(m).__name__, 'train_loss': round(loss.item(), 4), 'seconds': round(time.time() - t0, 1), 'tensors': names}
        entry['ppl'] = {}
        for tname, ids in texts.items():
            ppl, nw = perplexity(m, ids)
            entry['ppl'][tname] = ppl
            entry.setdefault('windows', {})[tname] = nw
        if getattr(cfg, 'num_experts_per_tok', None):
            entry['routed_calibration_tokens'] = routed_counts(m, cfg, train)
        refs['models'][name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != 'tensors'}), flush=True)
        json.dump(refs, open(refs_file + '.tmp', 'w'), indent=1)
        os.replace(refs_file + '.tmp', refs_file)


def check(dirs):
    texts = {os.path.basename(t)[:-4]: tokens(t) for t in TEXTS}
    out = {}
    for d in dirs:
        m = load(d).to(DEV).eval()
        out[d] = {'class': type(m).__name__, 'ppl': {t: perplexity(m, ids)[0] for t, ids in texts.items()}}
        print(d, json.dumps(out[d]), flush=True)
    return out


if __name__ == '__main__':
    if sys.argv[1] == 'make':
        os.makedirs(sys.argv[2], exist_ok=True)
        make(sys.argv[2], int(sys.argv[sys.argv.index('--steps') + 1]) if '--steps' in sys.argv else 400)
    elif sys.argv[1] == 'check':
        res = check(sys.argv[3:])
        json.dump(res, open(sys.argv[2], 'w'), indent=1)
