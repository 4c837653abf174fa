# Manual check (needs PyTorch + transformers; not part of CI, which has neither): the F16 export of
# a run loads in Hugging Face transformers as a plain LlamaForCausalLM, and its perplexity under the
# protocol (non-overlapping windows, no special tokens) equals the engine's on the native output.
#   node bin/lopro export <run> --format f16 --out DIR
#   python3 test/integration/hf_f16_check.py DIR 256 fixtures/text/persuasion.txt fixtures/text/jargon_tail.txt
# Seen 2026-11-22 (H100 machine, torch 2.11.0, transformers 5.17.0), demo run (tiny, LoPRo W2, 32
# windows): persuasion 67.1389 / jargon_tail 86.9789 — the engine's native-output values 67.139 / 86.979.
import json, math, sys, time
try:
    import torch
    import transformers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
except Exception as e:
    print("IMPORT-FAIL", repr(e)); sys.exit(3)
print("torch", torch.__version__, "transformers", transformers.__version__)
d = sys.argv[1]; ctx = int(sys.argv[2])
m = LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval().cuda()
print(type(m).__name__, sum(p.numel() for p in m.parameters()))
tok = PreTrainedTokenizerFast(tokenizer_file=d + "/tokenizer.json")
for f in sys.argv[3:]:
    ids = tok(open(f, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
    n = len(ids) // ctx
    x = torch.tensor(ids[: n * ctx]).view(n, ctx).cuda()
    tot = 0.0
    with torch.no_grad():
        for i in range(0, n, 32):
            b = x[i:i+32]
            logits = m(b).logits.float()
            lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, b[:, 1:, None])[..., 0]
            tot += -lp.double().sum().item()
    print(f, "ppl", math.exp(tot / (n * (ctx - 1))), "windows", n)
