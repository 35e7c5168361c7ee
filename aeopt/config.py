"""The settings of a training run: one dataclass, round-tripped through `config.yaml`.

Every field is also a command-line flag (`latent_dim` <-> `--latent-dim`) and a YAML key, so a
config file, the flags and the Python API can never disagree on a name.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import AeoptError

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
MODEL_KNOBS = ("width", "depth", "blocks", "kernel_size", "norm", "activation", "decoder", "hidden", "dropout",
               "backbone", "beta", "codebook_size", "code_dim", "commitment", "adv_weight",
               "entropy", "lmbda", "quality", "distortion")


@dataclass
class TrainConfig:
    # data
    data: str = "digits"              # zero-setup default that ships with scikit-learn
    data_dir: str | None = None       # where fashion-mnist lives, if not in the Debian package's folder
    limit: int | None = None          # use only the first N training samples (quick experiments)
    seed: int = 0                     # one seed fixes the split, the initial weights and the batch order
    # model
    model: str = "conv"               # convolutions beat an MLP per FLOP on images
    latent_dim: int = 16              # 4x compression of the 8x8 digits; pass 32 for 28x28 data
    width: int | None = None          # model knobs: None keeps each model's own default
    depth: int | None = None
    blocks: int | None = None
    kernel_size: int | None = None
    norm: str | None = None
    activation: str | None = None
    decoder: str | None = None
    hidden: str | None = None
    dropout: float | None = None
    backbone: str | None = None       # vae / vq_vae / aae: the encoder/decoder they build on (conv or mlp)
    beta: float | None = None         # vae: weight of the KL term (beta-VAE); 1 = the ELBO
    codebook_size: int | None = None  # vq_vae: number of code vectors
    code_dim: int | None = None       # vq_vae: size of one code vector (latent_dim / code_dim codes per sample)
    commitment: float | None = None   # vq_vae: weight pulling encoder outputs toward their code vectors
    adv_weight: float | None = None   # aae: weight of the "fool the latent discriminator" term
    entropy: str | None = None        # codec: factorized | hyperprior (density of the latent)
    lmbda: float | None = None        # codec: R + lmbda * D trade-off (CompressAI's scale: D = 255^2 MSE)
    quality: int | None = None        # codec: 1..8, CompressAI's lambda presets when --lmbda is absent
    distortion: str | None = None     # codec: mse | ms-ssim
    patch: int | None = None          # codec: train on random PATCHxPATCH crops of images:DIR (any sizes)
    # objective
    loss: str = "auto"                # bce for data in [0, 1], mse otherwise (printed with the reason)
    sparse_l1: float = 0.0            # weight of mean |z| (sparse codes); 0 = off
    l1_weights: float = 0.0           # weight of sum |w| over weight tensors; 0 = off
    sparse_kl: str | None = None      # "RHO:W": KL(rho || mean unit activity) weighted by W (sparse autoencoder)
    contractive: float = 0.0          # weight of the encoder's squared Jacobian norm (contractive AE); 0 = off
    noise: str | None = None          # "KIND:LEVEL" input corruption (denoising AE): gaussian | masking | salt_pepper
    kl_warmup: int = 0                # vae: epochs over which the KL weight ramps linearly from 0 to beta
    # optimization
    epochs: int = 40                  # digits trains in well under a minute at this length
    batch_size: int = 128             # big enough to keep 2 cores busy, small enough for many steps
    optimizer: str = "adamw"          # Adam's speed with weight decay that does not fight the adaptive rate
    lr: float | str = 3e-3            # works for the built-in conv/mlp models with cosine; "auto" = lr-find
    weight_decay: float = 1e-4        # light decoupled decay on weights only
    momentum: float = 0.9             # sgd / rmsprop only
    nesterov: bool = False            # sgd only
    schedule: str = "cosine"          # warm-up then cosine decay: robust without tuning
    clip_grad: float | None = None    # max global gradient norm; None = no clipping
    patience: int | None = 10         # early stopping after this many epochs without validation gain
    precision: str = "auto"           # auto = bf16 autocast where the processor runs it fast, else fp32
    compile: bool = False             # torch.compile: no gain measured on CPU, so opt-in
    memory_format: str = "auto"       # auto | channels_last | contiguous (auto: NHWC for convs on GPU or in bf16)
    cuda_graph: bool = True           # CUDA: replay the whole step as one CUDA graph (small models are launch-bound)
    threads: int | None = None        # None = all cores torch sees
    # output
    out: str | None = None            # run directory; None = runs/<data>-<model>-<time>
    extra: dict[str, Any] = field(default_factory=dict)  # reserved for settings added by extensions

    def model_knobs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in MODEL_KNOBS if getattr(self, k) is not None}

    def validate(self) -> "TrainConfig":
        """Reject impossible numbers with a message that names the flag to fix."""
        self.lr = parse_lr(self.lr)
        checks = [
            (isinstance(self.latent_dim, int) and self.latent_dim >= 1, "--latent-dim must be >= 1"),
            (isinstance(self.epochs, int) and self.epochs >= 1, "--epochs must be >= 1"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.lr == "auto" or (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0),
             "--lr must be a positive number, e.g. 1e-3, or auto"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.limit is None or self.limit >= 1, "--limit must be >= 1"),
            (self.clip_grad is None or self.clip_grad > 0, "--clip-grad must be > 0"),
            (self.patience is None or self.patience >= 1, "--patience must be >= 1"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), "--precision must be auto, fp32, bf16 or fp16"),
            (self.threads is None or self.threads >= 1, "--threads must be >= 1"),
            (self.memory_format in MEMORY_FORMATS, "--memory-format must be auto, channels_last or contiguous"),
        ]
        from .optim import OPTIMIZERS, SCHEDULES

        for name, value, known in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES)):
            if value not in known:
                raise AeoptError(f"unknown {name} {value!r}; known: {', '.join(known)}")
        for ok, message in checks:
            if not ok:
                raise AeoptError(f"{message} (got {_offending(message, self)})")
        from .variants import check_variant_settings  # noqa: PLC0415  (variants imports this module)

        check_variant_settings(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AeoptError(f"{source}: unknown setting {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


def parse_lr(value: Any) -> Any:
    """A learning rate from a flag or YAML: a number, "auto", or a numeric string (YAML reads 1e-3 as
    text). Anything else is returned unchanged for validate() to reject with its message."""
    if isinstance(value, str) and value.strip().lower() != "auto":
        try:
            return float(value)
        except ValueError:
            return value
    return "auto" if isinstance(value, str) else value


def _offending(message: str, config: TrainConfig) -> Any:
    flag = message.split()[0].lstrip("-").replace("-", "_")
    return getattr(config, flag, "?")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file, with one-line errors for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise AeoptError(f"no such config file: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise AeoptError(f"{path} is not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise AeoptError(f"{path} must hold a mapping of settings (key: value), not a {type(values).__name__}")
    return values
