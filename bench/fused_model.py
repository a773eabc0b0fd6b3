"""Two ways to run N ESPCN members as one network, side by side: grouped convolutions (what
trainable/fused.py uses) against the members' stacked parameters under ``torch.func.vmap``.

    python bench/fused_model.py [--members 1 2 8] [--batch 16] [--patch 32] [--reps 5]

For each N: operator calls of one forward + loss + backward (counted with a TorchDispatchMode:
on a GPU each is a kernel launch, which bounds this network's step) and its CPU time (median of
``--reps``, the two forms interleaved so machine noise hits them alike). Both compute each
member's own network on its own patches (the outputs are checked to agree) without the residual:
the fused trainer adds the bicubic outside the network, once per window of batches. Whether
vmap batches the residual's antialiased bicubic at all is reported on the side.
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainable.model import EarlyFusionESPCN  # noqa: E402


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def grouped_step(members: list[EarlyFusionESPCN]):
    """fused.py's form: one network whose convolutions have groups=N (conv1 too: every member
    has its own patches)."""
    n = len(members)
    leaves = [torch.cat([p.detach() for p in ps]).requires_grad_()
              for ps in zip(*(m.parameters() for m in members), strict=True)]

    def step(x: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, _, t, h, w = x.shape  # (B, N, T, h, w): member i's frames are channels i*T..
        w1, b1, w2, b2, w3, b3 = leaves
        y = torch.tanh(F.conv2d(x.view(b, n * t, h, w), w1, b1, padding=2, groups=n))
        y = torch.tanh(F.conv2d(y, w2, b2, padding=1, groups=n))
        out = F.pixel_shuffle(F.conv2d(y, w3, b3, padding=1, groups=n), members[0].scale)
        sums = F.mse_loss(out, hr, reduction="none").sum((0, 2, 3), keepdim=True)
        return out, torch.autograd.grad(sums, leaves, grad_outputs=torch.ones_like(sums))

    return step


def vmap_step(members: list[EarlyFusionESPCN]):
    """PyTorch's model-ensembling recipe: stacked parameters, the plain module under vmap."""
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    leaves = list(params.values())

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    def step(x: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = vmap(one, in_dims=(0, 0, 1))(params, buffers, x)  # (N, B, 1, H, W)
        sums = F.mse_loss(out[:, :, 0].transpose(0, 1), hr, reduction="none").sum(
            (0, 2, 3), keepdim=True)
        return out[:, :, 0].transpose(0, 1), torch.autograd.grad(
            sums, leaves, grad_outputs=torch.ones_like(sums))

    return step


def measure(n: int, batch: int, patch: int, reps: int) -> dict[str, float]:
    torch.manual_seed(n)
    members = [EarlyFusionESPCN(3, 4, residual=False) for _ in range(n)]
    x = torch.rand(batch, n, 3, patch, patch)
    hr = torch.rand(batch, n, 4 * patch, 4 * patch)
    forms = {"grouped": grouped_step(members), "vmap": vmap_step(members)}
    outs = {name: f(x, hr) for name, f in forms.items()}  # warm-up, and the check
    torch.testing.assert_close(outs["grouped"][0], outs["vmap"][0], rtol=1e-4, atol=1e-5)
    row: dict[str, float] = {"members": n}
    for name, f in forms.items():
        count = _Count()
        with count:
            f(x, hr)
        row[f"{name}_ops"] = sum(count.calls.values())
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(reps):
        for name, f in forms.items():
            t0 = time.perf_counter()
            f(x, hr)
            times[name].append(time.perf_counter() - t0)
    for name in forms:
        row[f"{name}_ms"] = 1000 * statistics.median(times[name])
    return row


def residual_under_vmap() -> str:
    """Does vmap batch EarlyFusionESPCN's residual (antialiased bicubic), or loop over N?"""
    members = [EarlyFusionESPCN(3, 4, residual=True) for _ in range(2)]
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = _Count()
        with count:
            vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, 1))(
                params, buffers, torch.rand(2, 2, 3, 8, 8))
    slow = [str(w.message).split(".")[0] for w in caught if "fallback" in str(w.message).lower()]
    return (f"{sum(count.calls.values())} calls for N=2 with the residual; "
            + (f"vmap warned: {slow[0]}" if slow else "no vmap fallback warning"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", type=int, nargs="+", default=[1, 2, 8])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.patch}x{args.patch} LR patches, forward + loss + backward, no residual")
    print(f"{'N':>3} {'grouped calls':>14} {'vmap calls':>11} {'grouped ms':>11} {'vmap ms':>9} "
          f"{'vmap / grouped':>15}")
    for n in args.members:
        r = measure(n, args.batch, args.patch, args.reps)
        print(f"{n:>3} {r['grouped_ops']:>14.0f} {r['vmap_ops']:>11.0f} {r['grouped_ms']:>11.1f} "
              f"{r['vmap_ms']:>9.1f} {r['vmap_ms'] / r['grouped_ms']:>15.2f}")
    print("residual under vmap:", residual_under_vmap())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
