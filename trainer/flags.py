"""The trainer's flags. Processes and hosts are horovodrun's business, not ours."""
from __future__ import annotations

import argparse
import re

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")    # Keras policy names
# --xla: XLA auto-clustering, on CPUs too; TensorFlow reads it when it starts (trainer/model/precision.py).
XLA_ENV = {"TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"}

DESCRIPTION = """Train an image classifier on a published dataset with synchronous data-parallel
SGD. Launch one process per GPU (or CPU slot) with horovodrun, e.g.

  horovodrun -np 2 -H localhost:2 python -m trainer --dataset s3://bucket/datasets/fmnist \\
      --checkpoint-dir s3://bucket/runs/fmnist

Rank 0 writes a checkpoint every epoch (and every --checkpoint-every steps); restarting with the
same --checkpoint-dir resumes from the newest complete one, at the exact batch where it was
written. Elastic mode (processes may come and go; it needs --global-batch-size):

  horovodrun -np 2 --min-np 1 --max-np 2 --host-discovery-script ./hosts.sh \\
      python -m trainer ... --global-batch-size 128

S3 endpoint and credentials come from boto3's usual chain (AWS_ENDPOINT_URL_S3,
AWS_ACCESS_KEY_ID, ...) or --s3-endpoint-url."""


# --augment auto: crops from this many updates on (measured: docs/trainer.md "Defaults").
AUGMENT_FROM_UPDATES = 1000


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def nonnegative(text, kind=int):
    value = kind(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def fraction(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def epoch_list(text):
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"want comma-separated epochs > 0, got {text!r}")
    return tuple(sorted(values))


def image_size(text):
    """'224' or '224x160' (height x width) -> (height, width)."""
    found = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"want S or HxW, e.g. 224 or 224x160, got {text!r}")
    height, width = int(found.group(1)), int(found.group(2) or found.group(1))
    if min(height, width) < 8:
        raise argparse.ArgumentTypeError(f"at least 8x8, got {text}")
    return height, width


def add_device_flags(p: argparse.ArgumentParser) -> None:
    """How each rank computes: precision, XLA, gradient traffic, CPU threads."""
    g = p.add_argument_group("devices and numerics (one GPU per rank is chosen by its local rank)")
    g.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="float32, mixed_float16 (float16 compute, float32 weights, dynamic loss "
                   "scaling: V100 and later) or mixed_bfloat16 (A100/H100, TPUs, CPUs with "
                   "AVX512_BF16 or AMX; no loss scaling) (default %(default)s)")
    g.add_argument("--xla", action="store_true", help="compile the ops of each step with XLA "
                   "(auto-clustering; Horovod's collectives stay outside the compiled clusters)")
    g.add_argument("--fp16-allreduce", action="store_true", help="send gradients as float16 in the "
                   "allreduce (half the traffic; for nodes linked by a slow network)")
    g.add_argument("--accumulate", type=positive(int), default=1, metavar="N",
                   help="sum the gradients of N batches before each update (a global batch N times "
                   "larger without the memory; the learning rate and steps count updates) (default 1)")
    g.add_argument("--threads", type=positive(int), help="CPU threads per rank (default: this pod's "
                   "CPU limit or affinity, divided by the ranks on the host)")


def add_location_flags(p: argparse.ArgumentParser) -> None:
    """Where the run reads and writes."""
    p.add_argument("--dataset", required=True, help="published dataset: directory (s3:// or local) "
                   "holding manifest.json")
    p.add_argument("--checkpoint-dir", required=True, help="where checkpoints go (s3:// or local); "
                   "reusing it resumes")
    p.add_argument("--model-dir", help="final SavedModel (default: <checkpoint-dir>/model)")
    p.add_argument("--report", help="JSON report (default: <checkpoint-dir>/report.json)")


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """What is trained, for how long, and when it counts as diverged."""
    p.add_argument("--model", default="cnn", help="cnn (3 convs + dropout, fast), cnn4 and cnn5 "
                   "(cnn with a 4th and a 5th conv: 1.5x and 2x the step time, more accurate on "
                   "long runs), shallow_cnn (7x7x64 conv, 3 more convs, 2 dense layers), resnet20 "
                   "(small ResNet), linear (softmax regression on the pixels: a baseline), or a "
                   "keras.applications backbone for images of 32x32 and larger, built without "
                   "weights (ImageNet weights: --init-from a .h5 file): resnet50, mobilenet_v2, "
                   "efficientnet_b0, vgg16 (default %(default)s)")
    p.add_argument("--epochs", type=positive(int), default=10, help="passes over the training split "
                   "(default %(default)s)")
    p.add_argument("--batch-size", type=positive(int), default=64, help="per process (default 64)")
    p.add_argument("--divergence-factor", type=lambda text: nonnegative(text, float), default=10.0,
                   metavar="X",
                   help="stop as diverged (exit 3, nothing exported) when an epoch's training loss "
                   "exceeds X times the first epoch's; non-finite losses always stop (0: no bound; "
                   "default %(default)s)")
    p.add_argument("--precise-bn", type=nonnegative, default=100, metavar="BATCHES",
                   help="after the last epoch, set the batch-norm statistics to their average over this "
                   "many training batches per process with the final weights (at most one epoch), "
                   "instead of the lagging moving average; 0: keep the moving average (default %(default)s)")


def add_optimizer_flags(p: argparse.ArgumentParser) -> None:
    """The optimizer, its learning rate schedule, and the loss."""
    p.add_argument("--lr", type=positive(float), default=0.025,
                   help="learning rate for a batch of --batch-size images; scaled linearly with the "
                   "global batch (x processes, or x --global-batch-size / --batch-size; default "
                   "%(default)s)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="SGD with momentum (default) or Adam (try --lr 0.001)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=5e-4,
                   help="L2 penalty on the weights of conv and dense layers (default %(default)s)")
    p.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="linear warm-up to the scaled rate (Goyal et al. 2017; default 1)")
    p.add_argument("--decay", choices=("cosine", "step"), default="cosine",
                   help="after warm-up: cosine to 0 (default) or step decay at --decay-epochs")
    p.add_argument("--decay-epochs", type=epoch_list, default=(),
                   help="step decay boundaries, e.g. 30,60 (default: at 50%% and 75%% of --epochs)")
    p.add_argument("--decay-factor", type=positive(float), default=0.1,
                   help="step decay multiplier per boundary (default 0.1)")
    p.add_argument("--label-smoothing", type=fraction, default=0.0,
                   help="label smoothing of the cross-entropy, 0 to <1 (e.g. 0.1; default 0)")
    p.add_argument("--class-weights", choices=("none", "balanced"), default="none",
                   help="balanced: weight each class by total / (classes x its count) from the "
                   "manifest's training class counts (for imbalanced data; default: none)")


def add_augmentation_flags(p: argparse.ArgumentParser) -> None:
    """Augmentation, the photos' input size, and the seed."""
    p.add_argument("--flip", action="store_true",
                   help="random horizontal flips in augmentation, for natural photos where a mirror "
                   "image is the same class (default: off; wrong for digits, text, many products)")
    p.add_argument("--brightness", type=fraction, default=0.0,
                   help="random brightness shift up to this much of the [0,1] range (default 0)")
    p.add_argument("--contrast", type=fraction, default=0.0,
                   help="random contrast factor in [1-x, 1+x] (default 0)")
    p.add_argument("--erase", type=fraction, default=0.0, metavar="P",
                   help="random erasing: with probability P, a random rectangle of 2-40%% of an "
                   "image becomes noise (Zhong et al. 2017; e.g. 0.5; default 0)")
    p.add_argument("--augment", choices=("auto", "on", "off"), default="auto",
                   help="random crops from the padded image (and --flip, --brightness, --contrast, --erase): "
                   "on, off, or auto: on when one of those is given or the run has at least "
                   f"{AUGMENT_FROM_UPDATES} updates, off for shorter runs, where crops cost accuracy "
                   "(Fashion-MNIST, 105 updates: 80.0%% with crops, 86.2%% without; default auto)")
    p.add_argument("--no-augment", action="store_true", help="the same as --augment off")
    p.add_argument("--image-size", type=image_size, metavar="S|HxW",
                   help="the model's input size for photos of any size: random-resized crops for "
                   "training (the JPEG decoded inside the crop only), the central 87.5%% for "
                   "evaluation and serving (default: a dataset of one image size is used as it is; "
                   "photos of many sizes get their median shorter side, at most 224)")
    p.add_argument("--seed", type=int, default=42, help="seed of the weights, the input order and "
                   "the augmentation; the same seed gives the same run (default %(default)s)")


def add_transfer_flags(p: argparse.ArgumentParser) -> None:
    """Heads on label attributes, warm starts and frozen layers."""
    p.add_argument("--heads", metavar="ATTRIBUTES",
                   help="datasets with several label attributes (e.g. Cartoon Set): train one head "
                   "per attribute on one network, e.g. 'eye_color,hair' or 'all' (default: one head "
                   "on the primary label)")
    p.add_argument("--head-weights", metavar="WEIGHTS",
                   help="with --heads: weights of the heads' losses in their sum, e.g. 'hair=2,"
                   "eye_color=0.5' (default: 1 each)")
    p.add_argument("--init-from", metavar="URL",
                   help="start from an earlier run: its SavedModel dir (e.g. <checkpoint-dir>/model) "
                   "or a checkpoint dir with COMMITTED checkpoints; or a Keras weights file (.h5, e.g. "
                   "keras.applications' ImageNet weights, or a .keras model file); s3:// or local. "
                   "Layers are matched by name and shape; a head sized for other classes starts new "
                   "(default: none, random weights)")
    p.add_argument("--restore", metavar="PREFIXES",
                   help="with --init-from: restore only layers whose names start with one of these "
                   "comma-separated prefixes (default: every matching layer)")
    p.add_argument("--freeze", metavar="SPEC",
                   help="layers not to train: 'all-but-head' or comma-separated layer-name prefixes "
                   "(e.g. block1,block2; for a backbone, block prefixes such as conv4,conv5_block1_). "
                   "Frozen batch-norm layers run in inference mode (default: none, train all)")
    p.add_argument("--unfreeze-top", type=nonnegative, default=0, metavar="N",
                   help="with --freeze and a backbone: train the top N blocks again (e.g. resnet50: "
                   "conv5_block3, conv5_block2, ...; vgg16: block5, block4, ...), their batch-norm "
                   "layers staying frozen; for fine-tuning at a lower --lr (default %(default)s)")


def add_tool_flags(p: argparse.ArgumentParser) -> None:
    """Measurements and logs: the input check, the profiler, TensorBoard."""
    p.add_argument("--check-input", choices=("before", "only"),
                   help="measure the tf.data pipeline alone and the model step alone and say whether "
                   "training is input-bound: 'before' training, or 'only' (then exit)")
    p.add_argument("--profile", action="store_true",
                   help="record steps 6-10 of the first epoch: tf.profiler trace + Horovod timeline "
                   "in <checkpoint-dir>/profile/")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="no TensorBoard logs (default: <checkpoint-dir>/tensorboard)")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """Local caches, checkpoint and commit rhythm, the global batch, logs, S3."""
    p.add_argument("--cache-dir",
                   help="local directory for shards and each job's files; each job's folder in it is "
                   "made 0700 (default: a per-user cache, $XDG_CACHE_HOME or ~/.cache, "
                   "/image-classifier-pipeline/trainer)")
    p.add_argument("--cache-limit-gb", type=positive(float), default=20.0, metavar="GB",
                   help="shard files on local disk per process: training starts once its first shard "
                   "is local, later ones are fetched while earlier ones are read, and read ones are "
                   "removed when space is needed; a share that fits is fetched once (default %(default)s)")
    p.add_argument("--memory-cache-gb", type=lambda text: nonnegative(text, float), default=2.0, metavar="GB",
                   help="keep a process's decoded images (photos: their encoded bytes) in memory after "
                   "the first epoch when they fit in this much; otherwise each epoch reads the files in "
                   "a new order through a 10,000-image shuffle buffer (default %(default)s)")
    p.add_argument("--resume-other-version", action="store_true",
                   help="resume from --checkpoint-dir's newest checkpoint even when it was trained on "
                   "another version of the dataset (republished since, or another --dataset); "
                   "without it such a resume is refused")
    p.add_argument("--keep-checkpoints", type=positive(int), default=3,
                   help="committed checkpoints kept in --checkpoint-dir; older ones are deleted "
                   "(default %(default)s)")
    p.add_argument("--checkpoint-every", type=nonnegative, default=0, metavar="STEPS",
                   help="also commit a checkpoint every this many global steps, mid-epoch (default 0: "
                   "at epoch ends only); a resumed run goes on from the exact batch")
    p.add_argument("--commit-every", type=positive(int), default=20, metavar="STEPS",
                   help="elastic mode (horovodrun --min-np/--max-np): commit the in-memory state every "
                   "this many steps; a lost process costs at most this much work (default 20)")
    p.add_argument("--global-batch-size", type=positive(int),
                   help="images per step over all processes; required in elastic mode (default: "
                   "the resumed checkpoint's, else --batch-size x processes). Fixed for the whole "
                   "run: when an elastic run loses a process each remaining one takes a larger "
                   "share, so the learning rate schedule and steps per epoch do not change")
    p.add_argument("--log-every", type=positive(float), default=10.0,
                   help="seconds between progress lines in a log or pipe (on a terminal the line "
                   "is updated in place every second; default %(default)s)")
    p.add_argument("--verbose", action="store_true",
                   help="also TensorFlow's, absl's and Horovod's own start-up and INFO lines "
                   "(TF_CPP_MIN_LOG_LEVEL=0; default: errors only)")
    p.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (default: boto3's configuration)")


class FlagError(Exception):
    """A flag argparse cannot parse; the message names it (printed as one line by __main__)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag raises FlagError instead of printing the whole usage (some 40
    lines, once per rank under horovodrun) and exiting; --help still prints and exits."""

    def error(self, message: str):
        raise FlagError(message)


def parser() -> Parser:
    p = Parser(prog="python -m trainer", description=DESCRIPTION,
               formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add_location_flags(p)
    add_training_flags(p)
    add_optimizer_flags(p)
    add_augmentation_flags(p)
    add_transfer_flags(p)
    add_tool_flags(p)
    add_run_flags(p)
    add_device_flags(p)
    return p
