"""The course report's own code (../shared/seed/report.txt, sections 4.1-4.4), as the baseline the benchmarks
measure digitrec against.  Only two things are added: a test evaluation after every epoch with the time since
the process started (to find when it first reaches a target accuracy), and command-line options.

    python -m benchmarks.report_code --data-dir data --epochs 10 --stop-at 99
"""

import argparse
import time

START = time.perf_counter()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402
import torchvision.transforms as transforms  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402


class CNN(nn.Module):
    def __init__(self):
        super(CNN, self).__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels=1, out_channels=16, kernel_size=5, stride=1, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(in_channels=16, out_channels=32, kernel_size=5, stride=1, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.conv3 = nn.Sequential(
            nn.Conv2d(in_channels=32, out_channels=64, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.dropout = nn.Dropout(0.5)
        self.out = nn.Linear(64 * 3 * 3, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = x.view(x.size(0), -1)
        x = self.dropout(x)
        output = self.out(x)
        return output


def test_accuracy(model, test_loader, device):
    model.eval()
    correct = 0
    total = 0
    with torch.no_grad():
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            outputs = model(images)
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return 100 * correct / total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="data")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--stop-at", type=float, help="stop once the test accuracy reaches this (percent)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)

    transform = transforms.ToTensor()
    train_data = torchvision.datasets.MNIST(root=args.data_dir, train=True, download=False, transform=transform)
    test_data = torchvision.datasets.MNIST(root=args.data_dir, train=False, download=False, transform=transform)
    train_loader = DataLoader(train_data, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_data, batch_size=1000, shuffle=False)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = CNN().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)

    for epoch in range(args.epochs):
        model.train()
        running_loss = 0.0
        epoch_start = time.perf_counter()
        for batch_idx, (images, labels) in enumerate(train_loader):
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        scheduler.step()
        epoch_seconds = time.perf_counter() - epoch_start
        avg_loss = running_loss / len(train_loader)
        accuracy = test_accuracy(model, test_loader, device)
        print(f"Epoch [{epoch + 1}/{args.epochs}], Average Loss: {avg_loss:.4f}, LR: {scheduler.get_last_lr()[0]:.6f}"
              f", Test Accuracy: {accuracy:.2f}%, epoch {epoch_seconds:.2f} s, "
              f"since start {time.perf_counter() - START:.2f} s", flush=True)
        if args.stop_at is not None and accuracy >= args.stop_at:
            break
    print(f"Test Accuracy: {accuracy:.2f}%")


if __name__ == "__main__":
    main()
