"""LearnedLSTMOptim under DistributedDataParallel: unchanged, one line as with Adam.

Trains the quickstart's digits MLP (scikit-learn's 8x8 digits) data-parallel on CPU with the
gloo backend: every process takes its own part of each batch, DDP averages the gradients, and
each process runs the same learned step, so parameters and LSTM hidden state stay identical
on every process (checked at the end).

    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py
    python examples/ddp_train.py              # one process also works
"""

import os

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from learned_optim import LearnedLSTMOptim


def main(steps: int = 200, batch_size: int = 128) -> None:
    if "RANK" not in os.environ:  # plain `python`: a group of one
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT="29531")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)

    torch.manual_seed(0)  # the same initial model everywhere (DDP also broadcasts rank 0's)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, 20), nn.Sigmoid(),
                                                  nn.Linear(20, 10)))
    optimizer = LearnedLSTMOptim(model.parameters())  # was: torch.optim.Adam(...)
    generator = torch.Generator().manual_seed(0)  # same batches everywhere; each takes a part
    for step in range(steps):
        batch = torch.randint(0, len(x), (batch_size,), generator=generator)
        mine = batch[rank::world]
        loss = nn.functional.cross_entropy(model(x[mine]), y[mine])
        optimizer.zero_grad()
        loss.backward()  # DDP all-reduces (averages) the gradients here
        optimizer.step()
        if rank == 0 and step in (0, 10, 25, 50, 100, 150, steps - 1):
            print(f"step {step:>4}  loss on rank 0's part of the batch {loss.item():.4f}")

    # every process holds the same parameters and the same hidden state, bit for bit
    held = [p.detach() for p in model.parameters()]
    held += [optimizer.state[p]["hidden"] for p in model.parameters()]
    flat = torch.cat([t.reshape(-1) for t in held])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    identical = all(torch.equal(gathered[0], other) for other in gathered)
    if rank == 0:
        print(f"{world} process(es): parameters and hidden state identical on all: {identical}")
    dist.destroy_process_group()
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
