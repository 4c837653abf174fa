"""The peer for the GPU benchmark: a faithful port of IST-DASLab/gptq `GPTQ.fasterquant` + `quant.Quantizer`
(commit 2d65066), run with PyTorch on the same layers and Hessians as our engine.

Usage: python3 bench/torch_gptq.py --shapes 4096x4096,11008x4096,4096x11008 --bits 2,3 --json out.json
Layers: W ~ N(0,1)/sqrt(cols) with log-normal row/column scales; H = 2/N XᵀX from correlated, heavy-tailed X
(the same recipe as bench/gpu_layers.ts, regenerated here from the same seeds is NOT required: timing, not values,
is compared; the engine's own proxy loss is reported beside it).
"""
import argparse, json, math, time
import torch


class Quantizer:
    def configure(self, bits, perchannel=True, sym=False):
        self.maxq = torch.tensor(2 ** bits - 1)
        self.perchannel, self.sym = perchannel, sym

    def find_params(self, x):
        dev = x.device
        self.maxq = self.maxq.to(dev)
        tmp = torch.zeros(x.shape[0], device=dev)
        xmin = torch.minimum(x.min(1)[0], tmp)
        xmax = torch.maximum(x.max(1)[0], tmp)
        if self.sym:
            xmax = torch.maximum(torch.abs(xmin), xmax)
            tmp = xmin < 0
            if torch.any(tmp):
                xmin[tmp] = -xmax[tmp]
        tmp = (xmin == 0) & (xmax == 0)
        xmin[tmp] = -1
        xmax[tmp] = +1
        self.scale = (xmax - xmin) / self.maxq
        if self.sym:
            self.zero = torch.full_like(self.scale, (self.maxq + 1) / 2)
        else:
            self.zero = torch.round(-xmin / self.scale)
        self.scale = self.scale.unsqueeze(1)
        self.zero = self.zero.unsqueeze(1)

    def quantize(self, x):
        q = torch.clamp(torch.round(x / self.scale) + self.zero, 0, self.maxq)
        return self.scale * (q - self.zero)


def fasterquant(W, H, bits, blocksize=128, percdamp=0.01, groupsize=128, actorder=False):
    """GPTQ.fasterquant, line for line (static_groups off)."""
    W = W.clone().float()
    H = H.clone()
    rows, columns = W.shape
    quantizer = Quantizer()
    quantizer.configure(bits, perchannel=True, sym=False)
    quantizer.find_params(W)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    Losses = torch.zeros_like(W)
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns, device=W.device)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1 and (i1 + i) % groupsize == 0:
                quantizer.find_params(W[:, (i1 + i):(i1 + i + groupsize)])
            q = quantizer.quantize(w.unsqueeze(1)).flatten()
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d ** 2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        Losses[:, i1:i2] = Losses1 / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    torch.cuda.synchronize() if W.is_cuda else None
    if actorder:
        Q = Q[:, torch.argsort(perm)]
    return Q, torch.sum(Losses).item()


def make_layer(rows, cols, seed, device):
    g = torch.Generator(device='cpu').manual_seed(seed)
    T = 4096
    k = max(8, cols // 8)
    F = torch.randn(T, k, generator=g)
    B = torch.randn(k, cols, generator=g) / math.sqrt(k)
    E = torch.randn(T, cols, generator=g)
    s = torch.exp(0.5 * torch.randn(cols, generator=g))
    X = (0.8 * F @ B + 0.6 * E) * s
    heavy = torch.randperm(cols, generator=g)[: max(1, cols // 256)]
    X[:, heavy] *= 20
    X = X.to(device)
    H = (2.0 / T) * X.T @ X
    W = torch.randn(rows, cols, generator=g) / math.sqrt(cols)
    W *= torch.exp(0.3 * torch.randn(rows, 1, generator=g)) * torch.exp(0.3 * torch.randn(1, cols, generator=g))
    return W.to(device), H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--shapes', default='4096x4096,11008x4096,4096x11008')
    ap.add_argument('--bits', default='2')
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--tf32', action='store_true', help='allow TF32 (the original ran in fp32; default off)')
    ap.add_argument('--json', default='')
    a = ap.parse_args()
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    out = []
    for si, shape in enumerate(a.shapes.split(',')):
        rows, cols = map(int, shape.split('x'))
        W, H = make_layer(rows, cols, 1000 + si, dev)
        for bits in map(int, a.bits.split(',')):
            fasterquant(W, H, bits)  # warm-up (cuBLAS handles, kernels)
            ts = []
            for _ in range(a.reps):
                if dev == 'cuda':
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                _, loss = fasterquant(W, H, bits)
                if dev == 'cuda':
                    torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
            ts.sort()
            r = {'shape': shape, 'bits': bits, 'seconds_median': ts[len(ts) // 2], 'seconds_min': ts[0], 'loss': loss,
                 'device': torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu', 'torch': torch.__version__, 'tf32': a.tf32}
            print(json.dumps(r), flush=True)
            out.append(r)
    if a.json:
        json.dump(out, open(a.json, 'w'), indent=1)


if __name__ == '__main__':
    main()
