#!/usr/bin/env python
"""Word2vec (skip-gram or CBOW with negative sampling), written the Chainer 7 way.

This is a legacy program: it uses only Chainer's own API (``L.NegativeSampling``,
``L.EmbedID``, ``training.Trainer``, ``StandardUpdater``, extensions) and knows nothing of
ns_plugins. Run it unchanged on plain Chainer, or with the drop-ins:

    python compat/train_word2vec.py --corpus text.txt --out result
    python -m ns_plugins.chainer compat/train_word2vec.py --corpus text.txt --out result

The corpus is plain text (optionally .gz), whitespace-separated tokens. The trained input
vectors are written to OUT/word2vec.model in word2vec text format.
"""

import argparse
import collections
import gzip
import os

import chainer
import chainer.functions as F
import chainer.initializers as I
import chainer.links as L
import chainer.optimizers as O
import numpy
from chainer import reporter, training
from chainer.backends import cuda
from chainer.training import extensions


class ContinuousBoW(chainer.Chain):
    """Predicts the center word from the mean of its context embeddings."""

    def __init__(self, n_vocab, n_units, loss_func):
        super().__init__()
        with self.init_scope():
            self.embed = L.EmbedID(n_vocab, n_units, initialW=I.Uniform(1.0 / n_units))
            self.loss_func = loss_func

    def forward(self, x, contexts):
        e = self.embed(contexts)
        h = F.sum(e, axis=1) * (1.0 / contexts.shape[1])
        loss = self.loss_func(h, x)
        reporter.report({"loss": loss}, self)
        return loss


class SkipGram(chainer.Chain):
    """Predicts every context word from the center word's embedding."""

    def __init__(self, n_vocab, n_units, loss_func):
        super().__init__()
        with self.init_scope():
            self.embed = L.EmbedID(n_vocab, n_units, initialW=I.Uniform(1.0 / n_units))
            self.loss_func = loss_func

    def forward(self, x, contexts):
        e = self.embed(contexts)
        batch_size, n_context, n_units = e.shape
        x = F.broadcast_to(x[:, None], (batch_size, n_context))
        e = F.reshape(e, (batch_size * n_context, n_units))
        x = F.reshape(x, (batch_size * n_context,))
        loss = self.loss_func(e, x)
        reporter.report({"loss": loss}, self)
        return loss


class WindowIterator(chainer.dataset.Iterator):
    """Yields (center positions, context windows) over a 1-D array of word ids."""

    def __init__(self, dataset, window, batch_size, repeat=True):
        self.dataset = numpy.array(dataset, numpy.int32)
        self.window = window
        self.batch_size = batch_size
        self._repeat = repeat
        self.order = numpy.random.permutation(len(dataset) - window * 2).astype(numpy.int32)
        self.order += window
        self.current_position = 0
        self.epoch = 0
        self.is_new_epoch = False

    def __next__(self):
        if not self._repeat and self.epoch > 0:
            raise StopIteration

        i = self.current_position
        i_end = i + self.batch_size
        position = self.order[i:i_end]
        w = numpy.random.randint(self.window - 1) + 1
        offset = numpy.concatenate([numpy.arange(-w, 0), numpy.arange(1, w + 1)])
        pos = position[:, None] + offset[None, :]
        contexts = self.dataset.take(pos)
        center = self.dataset.take(position)

        if i_end >= len(self.order):
            numpy.random.shuffle(self.order)
            self.epoch += 1
            self.is_new_epoch = True
            self.current_position = 0
        else:
            self.is_new_epoch = False
            self.current_position = i_end

        return center, contexts

    next = __next__

    @property
    def epoch_detail(self):
        return self.epoch + float(self.current_position) / len(self.order)

    def serialize(self, serializer):
        self.current_position = serializer("current_position", self.current_position)
        self.epoch = serializer("epoch", self.epoch)
        self.is_new_epoch = serializer("is_new_epoch", self.is_new_epoch)
        if self.order is not None:
            serializer("order", self.order)


def convert(batch, device):
    center, contexts = batch
    if device >= 0:
        center = cuda.to_gpu(center)
        contexts = cuda.to_gpu(contexts)
    return center, contexts


def read_corpus(path, min_count):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        words = f.read().split()
    counts = collections.Counter(words)
    vocab = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    word2index = {w: i for i, w in enumerate(vocab)}
    ids = numpy.array([word2index[w] for w in words if w in word2index], numpy.int32)
    return ids, vocab, [counts[w] for w in vocab]


def save_vectors(path, index2word, W):
    with open(path, "w") as f:
        f.write("{} {}\n".format(*W.shape))
        for word, vector in zip(index2word, W):
            f.write("{} {}\n".format(word, " ".join(f"{v:.6f}" for v in vector)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="text corpus")
    parser.add_argument(
        "--gpu", "-g", default=-1, type=int, help="GPU ID (negative value indicates CPU)"
    )
    parser.add_argument("--unit", "-u", default=100, type=int, help="number of units")
    parser.add_argument("--window", "-w", default=5, type=int, help="window size")
    parser.add_argument("--batchsize", "-b", type=int, default=1000, help="learning minibatch size")
    parser.add_argument("--epoch", "-e", default=1, type=int, help="number of epochs to learn")
    parser.add_argument(
        "--model", "-m", choices=["skipgram", "cbow"], default="skipgram", help="model type"
    )
    parser.add_argument("--negative-size", default=5, type=int, help="number of negative samples")
    parser.add_argument("--min-count", default=5, type=int, help="drop words rarer than this")
    parser.add_argument(
        "--val-fraction",
        default=0.05,
        type=float,
        help="share of the corpus held out for validation",
    )
    parser.add_argument(
        "--log-interval", default=0, type=int, help="log every N iterations (0: every epoch)"
    )
    parser.add_argument("--seed", default=0, type=int, help="random seed")
    parser.add_argument("--out", default="result", help="directory to output the result")
    parser.add_argument(
        "--snapshot", action="store_true", help="write a trainer snapshot at every epoch end"
    )
    parser.add_argument("--resume", "-r", default="", help="resume the training from a snapshot")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and report table")
    args = parser.parse_args()

    numpy.random.seed(args.seed)
    if args.gpu >= 0:
        chainer.backends.cuda.get_device_from_id(args.gpu).use()

    ids, index2word, counts = read_corpus(args.corpus, args.min_count)
    n_val = int(len(ids) * args.val_fraction)
    train, val = ids[: len(ids) - n_val], ids[len(ids) - n_val :]
    n_vocab = len(index2word)
    print(f"n_vocab: {n_vocab}")
    print(f"data length: {len(train)}")

    loss_func = L.NegativeSampling(args.unit, counts, args.negative_size)
    loss_func.W.array[...] = 0

    if args.model == "skipgram":
        model = SkipGram(n_vocab, args.unit, loss_func)
    else:
        model = ContinuousBoW(n_vocab, args.unit, loss_func)

    if args.gpu >= 0:
        model.to_gpu()

    optimizer = O.Adam()
    optimizer.setup(model)

    train_iter = WindowIterator(train, args.window, args.batchsize)
    updater = training.updaters.StandardUpdater(
        train_iter, optimizer, converter=convert, device=args.gpu
    )
    trainer = training.Trainer(updater, (args.epoch, "epoch"), out=args.out)

    if n_val > args.window * 2:
        val_iter = WindowIterator(val, args.window, args.batchsize, repeat=False)
        trainer.extend(extensions.Evaluator(val_iter, model, converter=convert, device=args.gpu))
    log_trigger = (args.log_interval, "iteration") if args.log_interval else (1, "epoch")
    trainer.extend(extensions.LogReport(trigger=log_trigger))
    if not args.quiet:
        trainer.extend(
            extensions.PrintReport(
                ["epoch", "iteration", "main/loss", "validation/main/loss", "elapsed_time"]
            ),
            trigger=log_trigger,
        )
        trainer.extend(extensions.ProgressBar())
    if args.snapshot:
        trainer.extend(extensions.snapshot(), trigger=(1, "epoch"))
    if args.resume:
        chainer.serializers.load_npz(args.resume, trainer)
    trainer.run()

    save_vectors(
        os.path.join(args.out, "word2vec.model"), index2word, cuda.to_cpu(model.embed.W.array)
    )


if __name__ == "__main__":
    main()
