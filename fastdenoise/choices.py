"""The package's vocabulary: every fixed set of names that the command line offers and the library accepts, one Enum
each, and the command's exit statuses. Imports no torch: `fastdenoise --help` loads this module."""

from __future__ import annotations

from enum import Enum, IntEnum


class Choice(str, Enum):
    """A fixed set of option values: help lists them, a wrong one is a one-line error; str() is the value, and a
    member equals its value, so the library takes either."""

    def __str__(self) -> str:
        return str(self.value)


class BackendKind(Choice):
    eager = "eager"
    compiled = "compiled"
    triton = "triton"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"
    openvino = "openvino"
    auto = "auto"  # the fastest of the others for the device, by a short probe (fastdenoise.backends.auto)


class Precision(Choice):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    int8 = "int8"  # OpenVINO only: post-training quantized (NNCF), calibrated on training photos


class OnnxPrecision(Choice):  # an exported graph's weights and compute: no int8
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Exporter(Choice):
    dynamo = "dynamo"  # torch.export, the default since torch 2.9
    torchscript = "torchscript"


class HardwareCompatibility(Choice):  # of a TensorRT engine
    none = "none"
    ampere_plus = "ampere_plus"
    same_compute_capability = "same_compute_capability"


class ImageFormat(Choice):
    png = "png"
    jpg = "jpg"
    jpeg = "jpeg"
    webp = "webp"
    bmp = "bmp"
    tiff = "tiff"

    @property
    def suffix(self) -> str:
        """The file extension an output of this format gets."""
        return {"jpeg": ".jpg", "tiff": ".tif"}.get(self.value, f".{self.value}")


class LoaderKind(Choice):
    auto = "auto"  # DALI on a GPU where installed, else Pillow
    dali = "dali"
    pil = "pil"


class Executor(Choice):
    """Where `fastdenoise run` runs: local (this machine; under torchrun, each process a share) or ray."""

    LOCAL = "local"
    RAY = "ray"


class Task(Choice):
    CLASSIFY = "classify"
    SEGMENT = "segment"


class TaskTarget(Choice):
    """Where the task loss of joint training gets its target from."""

    LABELS = "labels"  # ground truth
    ARGMAX = "argmax"  # label-free: cross-entropy to H(clean).argmax
    SOFTMAX = "softmax"  # label-free: KL(softmax H(clean) || softmax H(D(noisy)))


class Amp(Choice):
    auto = "auto"
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class Switch(Choice):
    auto = "auto"
    on = "on"
    off = "off"


class Schedule(Choice):
    cosine = "cosine"  # warm-up then cosine to lr_min at `steps`
    constant = "constant"  # warm-up then flat (campaigns, extended with --resume --steps)


class Loss(Choice):
    mse = "mse"
    l1 = "l1"
    charbonnier = "charbonnier"


class Split(Choice):
    """Which rows of labels.csv a table uses: row p (0-based) is in `train` if p is even, in `test` if p is odd."""

    all = "all"
    train = "train"
    test = "test"


class NoiseAt(Choice):
    """Where table 2's noise goes: the head's centre crop (the paper's protocol), or the whole photo (`run`'s path)."""

    crop = "crop"
    photo = "photo"


class Peer(Choice):
    """The peer denoisers the tables and the benchmark run beside ours."""

    cbm3d = "cbm3d"
    cdncnn = "cdncnn"  # the network trained for the sigma (25, 35, 50)
    cdncnn_b = "cdncnn-b"
    cdncnn_25 = "cdncnn-25"
    cdncnn_35 = "cdncnn-35"
    cdncnn_50 = "cdncnn-50"
    ffdnet = "ffdnet"


PEERS = tuple(peer.value for peer in Peer)


def values(choice: type[Choice]) -> tuple[str, ...]:
    """The names of a choice, in order: `values(Task)` -> ('classify', 'segment')."""
    return tuple(member.value for member in choice)


class ExitStatus(IntEnum):
    """What the `fastdenoise` command exits with."""

    OK = 0
    FAILED = 1  # some input failed (run), an accuracy check or comparison failed (bench), training could not write
    USAGE = 2  # bad arguments, or the command could not start
    OUTPUT = 3  # stopped because the output could not be written (disk full, read-only): the same command resumes
    CLUSTER = 4  # the Ray pipeline failed as a whole
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM

    @classmethod
    def after_signal(cls, signum: int) -> int:
        """128 + the signal's number: INTERRUPTED or TERMINATED for the two a command handles, else the plain int."""
        code = 128 + int(signum)
        return cls(code) if code in cls._value2member_map_ else code
