#!/usr/bin/python3
"""PyTorch baseline for edge_train_speed_bench: trains the same architecture as fedge's built-in
model of that name, with the same batch size, optimizer (SGD, momentum 0.9) and thread count, on
random data of the same shape, and prints one line:

  dataloader_samples_per_s=<float> manual_samples_per_s=<float> epochs=<int>

Two loops are timed, each the way PyTorch users commonly write it:
  dataloader: DataLoader(TensorDataset(x, y), batch_size, shuffle=True), the tutorial idiom;
  manual:     torch.randperm once per epoch, then x[idx] / y[idx] slices per batch.
Both run zero_grad, forward, cross_entropy, backward, step and loss.item() per batch, like
fedge's C++ loop. Each epoch builds a fresh optimizer, as each fedge fine-tune does.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Mlp(nn.Module):
    def __init__(self, features, hidden, classes, mean, std):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        layers = []
        width = features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            width = h
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        x = (x - self.mean) / self.std
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.out(x)


class Conv1dNet(nn.Module):
    def __init__(self, features, window, conv, dense, classes, mean, std):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.channels = features // window
        self.window = window
        self.conv1 = nn.Conv1d(self.channels, conv, 3, padding=1)
        self.conv2 = nn.Conv1d(conv, conv, 3, padding=1)
        self.fc1 = nn.Linear(conv, dense)
        self.out = nn.Linear(dense, classes)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = x.reshape(x.size(0), self.channels, self.window)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = x.mean(dim=2)
        x = F.relu(self.fc1(x))
        return self.out(x)


def train_epoch(model, batches, lr):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_sum = 0.0
    for xb, yb in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(yb)
    return loss_sum


def manual_batches(x, y, batch):
    order = torch.randperm(x.size(0))
    for begin in range(0, x.size(0), batch):
        idx = order[begin:begin + batch]
        yield x[idx], y[idx]


def timed(model, make_batches, lr, warmup, epochs):
    model.train()
    for _ in range(warmup):
        train_epoch(model, make_batches(), lr)
    start = time.perf_counter()
    for _ in range(epochs):
        train_epoch(model, make_batches(), lr)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", choices=["mlp", "conv1d"], default="mlp")
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--features", type=int, default=12)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--hidden", default="64,32")
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup_epochs", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    x = torch.randn(a.rows, a.features)
    y = torch.randint(0, a.classes, (a.rows,))
    mean = x.mean(dim=0)
    std = x.std(dim=0)
    hidden = [int(h) for h in a.hidden.split(",")]
    if a.arch == "mlp":
        make = lambda: Mlp(a.features, hidden, a.classes, mean, std)
    else:
        make = lambda: Conv1dNet(a.features, a.window, hidden[0], hidden[1], a.classes, mean, std)

    loader = DataLoader(TensorDataset(x, y), batch_size=a.batch, shuffle=True)
    dl_seconds = timed(make(), lambda: loader, a.lr, a.warmup_epochs, a.epochs)
    manual_seconds = timed(make(), lambda: manual_batches(x, y, a.batch), a.lr, a.warmup_epochs,
                           a.epochs)
    samples = a.rows * a.epochs
    print(f"dataloader_samples_per_s={samples / dl_seconds:.1f} "
          f"manual_samples_per_s={samples / manual_seconds:.1f} epochs={a.epochs}", flush=True)


if __name__ == "__main__":
    main()
