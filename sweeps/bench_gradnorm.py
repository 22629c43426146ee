"""Gradient-norm tracking overhead against plain `model.fit`, measured side by side.

`python sweeps/bench_gradnorm.py --manual-dir DIR` trains the same model on the same
batches with and without per-block gradient norms, interleaved, and prints the ratio
of median epoch times and the epoch throughput.
"""

from __future__ import annotations

import argparse
import sys

import _cli


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist", help="TFDS image-classification dataset")
    parser.add_argument("--strategy", default="residual")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-split", default="train[:20000]")
    parser.add_argument("--epochs", type=int, default=4, help="per measurement; the first (tracing) one is dropped")
    parser.add_argument("--repeats", type=int, default=3)
    _cli.add_data_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from reuse_nets import data, training
    from reuse_nets.config import DatasetConfig, TrialConfig

    args = parse_args(argv)
    config = TrialConfig(
        strategy=args.strategy,
        depth=args.depth,
        width=args.width,
        batch_size=args.batch_size,
        dataset=DatasetConfig(name=args.dataset, train_split=args.train_split, validation_split="train[50000:51000]", test_split=None),
    )
    dataset = data.load(config.dataset, _cli.data_source(args))
    result = training.measure_gradient_norm_overhead(config, dataset, epochs=args.epochs, repeats=args.repeats)
    print(
        f"{config.strategy} depth {config.depth} width {config.width} batch {config.batch_size}, "
        f"{dataset.num_examples('train')} examples: tracked {result['tracked_s'] * 1000:.1f} ms/epoch, "
        f"plain fit {result['plain_s'] * 1000:.1f} ms/epoch (medians), ratio {result['ratio']:.3f} "
        f"(fastest epochs: {result['min_ratio']:.3f}), "
        f"throughput {result['throughput']:.0f} examples/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
