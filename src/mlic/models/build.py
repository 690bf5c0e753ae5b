"""timm model factory, starting weights (pretrained file, another experiment's checkpoint), the
backbone/head split, freezing, and the prior-initialised head."""

from __future__ import annotations

import fnmatch
import logging
import weakref
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from mlic.config.schema import Model
from mlic.data.images import Preprocessing
from mlic.models.architectures import SMP_DEFAULT_ENCODER, build_network, is_segmentation_model
from mlic.models.weights import read_state_dict, state_differences
from mlic.tasks import get_task
from mlic.utils.errors import CheckpointError, ConfigError

log = logging.getLogger("mlic")

SMP_DEFAULT_SIZE = (256, 256)  # a segmentation model's input size when data.img_size is not set


def create_model(cfg: Model, num_classes: int, task: str = "multi_label") -> nn.Module:
    """Create the model `cfg` names with `num_classes` outputs and the weights `cfg` asks for: a timm
    classifier, or for a segmentation task an smp architecture over `cfg.encoder`."""
    family = get_task(task).family
    if family == "timm":
        if cfg.encoder is not None:
            raise ConfigError(
                f"field 'model.encoder' is for segmentation models; task {task!r} builds the timm model "
                f"model.name={cfg.name!r}, so leave model.encoder out"
            )
        if cfg.name not in timm.list_models() and not timm.is_model(cfg.name):
            close = timm.list_models(f"*{cfg.name}*")[:5]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ConfigError(f"field 'model.name': timm has no model {cfg.name!r}{hint}")
    use_hub = cfg.pretrained is True
    try:
        model = build_network(
            family,
            cfg.name,
            num_classes,
            cfg.kwargs,
            cfg.encoder,
            use_hub,
            cfg.drop_rate if family == "timm" else None,
        )
    except (OSError, RuntimeError) as e:
        if use_hub:
            what = (
                f"{cfg.name!r}" if family == "timm" else f"the encoder {cfg.encoder or SMP_DEFAULT_ENCODER!r}"
            )
            raise CheckpointError(
                f"could not fetch the pretrained weights of {what} ({type(e).__name__}); without "
                f"internet set model.pretrained to a local weights file, or False"
            ) from None
        raise
    if isinstance(cfg.pretrained, str):
        if family == "smp":
            load_encoder_file(model, Path(cfg.pretrained))
        else:
            load_pretrained_file(model, Path(cfg.pretrained))
    return model


def load_encoder_file(model: nn.Module, path: Path) -> None:
    """Load local weights into an smp model's encoder: a timm or torchvision backbone's state dict (its
    classifier left out), or an smp model's or encoder's own. The decoder and head stay new."""
    state, _ = read_state_dict(path, "model.pretrained weights file")
    own = model.encoder.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("encoder.")
        for name in (key, f"model.{key}"):  # smp's timm-universal encoders hold the timm model as `model`
            if name in own and own[name].shape == value.shape:
                loaded[name] = value
                break
    if len(loaded) < len(own) // 2:
        first = next(iter(state), "nothing")
        raise CheckpointError(
            f"model.pretrained weights file {path} does not fit the encoder "
            f"{type(model.encoder).__name__}: {len(loaded)} of its {len(own)} tensors match (the file's "
            f"first: {first})"
        )
    model.encoder.load_state_dict(loaded, strict=False)
    log.info(
        "loaded %d of the encoder's %d tensors from %s; the decoder and head are newly initialised",
        len(loaded),
        len(own),
        path,
    )


def _head_keys(model: nn.Module) -> set[str]:
    head = head_parameter_names(model)
    head_modules = {n.rsplit(".", 1)[0] for n in head}
    buffers = {n for n, _ in model.named_buffers() if n.rsplit(".", 1)[0] in head_modules}
    return head | buffers


def _load_into(
    model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str, keep_head: bool
) -> None:
    own = model.state_dict()
    head = _head_keys(model)
    diff = state_differences(own, state, ignore=head)
    # a checkpoint with extra tensors still fits (an EMA copy, an auxiliary head), unless most are foreign
    if diff.reshaped or diff.missing or len(diff.unexpected) > len(state) // 2:
        detail = (
            f"{len(diff.reshaped)} tensors of another shape (first: {diff.reshaped[0]})"
            if diff.reshaped
            else f"{len(diff.missing)} of the model's tensors are missing (first: {diff.missing[0]})"
            if diff.missing
            else f"{len(diff.unexpected)} tensors belong to another model (first: {diff.unexpected[0]})"
        )
        raise CheckpointError(f"{what} {path} does not fit {type(model).__name__}: {detail}")
    load = {k: v for k, v in state.items() if k in own and (keep_head or k not in head)}
    load = {k: v for k, v in load.items() if own[k].shape == v.shape}
    model.load_state_dict(load, strict=False)


def load_pretrained_file(model: nn.Module, path: Path) -> None:
    """Load local backbone weights (like timm's pretrained ones); the head stays freshly initialised."""
    state, _ = read_state_dict(path, "model.pretrained weights file")
    _load_into(model, state, path, "model.pretrained weights file", keep_head=False)
    log.info("loaded backbone weights from %s; the classification head is newly initialised", path)


def load_checkpoint(model: nn.Module, path: Path, model_name: str, classes: list[str]) -> bool:
    """Start from another experiment's model file; re-create the head when its classes differ.

    Returns whether the head came from the checkpoint (False: it is newly initialised)."""
    state, meta = read_state_dict(path, "model.checkpoint")
    saved_name = meta.get("model_name")
    if saved_name and saved_name != model_name:
        raise CheckpointError(
            f"model.checkpoint {path} was trained as {saved_name!r} but the config builds {model_name!r}; "
            f"set model.name={saved_name!r} or pick a checkpoint of {model_name!r}"
        )
    saved_classes = meta.get("classes")
    if saved_classes is None:
        # a Lightning .ckpt or a bare state dict: no class list, so only the head's shape can tell
        head = _head_keys(model)
        if state_differences(model.state_dict(), {k: v for k, v in state.items() if k in head}).reshaped:
            saved_classes = ["?"]  # another class count: re-create the head below
        else:
            log.warning(
                "model.checkpoint %s records no class list: its head is loaded as is, assuming the same "
                "classes in the same order as classes.json",
                path,
            )
    if saved_classes is None or list(saved_classes) == list(classes):
        _load_into(model, state, path, "model.checkpoint", keep_head=True)
        if not _head_keys(model) & state.keys():  # backbone weights only: the head stays new
            log.info("started from %s (backbone weights; it holds no head)", path)
            return False
        log.info("started from %s (all weights, head included)", path)
        return True
    _load_into(model, state, path, "model.checkpoint", keep_head=False)
    log.warning(
        "model.checkpoint %s has other classes than this run (%d here): the head is re-created, "
        "the backbone comes from the checkpoint",
        path,
        len(classes),
    )
    return False


def classifier_biases(model: nn.Module) -> list[torch.Tensor]:
    """The biases of the layers that produce the logits (timm's `get_classifier()`; a distilled ViT
    has two heads, whose outputs it averages); empty when a head has no bias."""
    if is_segmentation_model(model):  # smp: the head's convolution gives a logit per class and pixel
        layers = [m for m in model.segmentation_head.modules() if isinstance(m, nn.Conv2d)]
        bias = layers[0].bias if layers else None
        return [bias] if isinstance(bias, torch.Tensor) else []
    get = getattr(model, "get_classifier", None)
    layers = get() if callable(get) else None
    layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    biases = [getattr(layer, "bias", None) for layer in layers]
    return biases if all(isinstance(b, torch.Tensor) for b in biases) else []


def prior_init_head(model: nn.Module, logits: np.ndarray) -> bool:
    """Set the new head's bias to `logits` (one per class), so that before any training the model
    predicts the same probabilities for every image: the class priors, with the log-odds of each
    class's frequency (focal-loss paper, sec. 3.3; see `metrics.prior_logits`).

    Returns False (and changes nothing) when the model has no classifier bias of one value per class.
    """
    biases = classifier_biases(model)
    if not biases or any(b.shape != (len(logits),) for b in biases):
        return False
    with torch.no_grad():
        for bias in biases:
            bias.copy_(torch.as_tensor(np.asarray(logits, dtype=np.float64), dtype=bias.dtype))
    return True


def preprocessing(model: nn.Module, img_size: tuple[int, int] | None) -> Preprocessing:
    """Resize and normalisation from the model's pretrained config; `img_size` overrides the size."""
    if is_segmentation_model(model):  # smp encoders are ImageNet models: its normalisation
        inner = getattr(model.encoder, "model", None)  # a timm-universal encoder's timm model
        data_cfg = (
            timm.data.resolve_data_config({}, model=inner)
            if inner is not None
            else {
                "input_size": (3, *SMP_DEFAULT_SIZE),
                "mean": timm.data.IMAGENET_DEFAULT_MEAN,
                "std": timm.data.IMAGENET_DEFAULT_STD,
            }
        )
        data_cfg["input_size"] = (3, *SMP_DEFAULT_SIZE)
    else:
        data_cfg = timm.data.resolve_data_config({}, model=model)
    size = tuple(img_size) if img_size else tuple(data_cfg["input_size"][1:])
    return Preprocessing(
        img_size=(int(size[0]), int(size[1])),
        mean=tuple(float(m) for m in data_cfg["mean"]),
        std=tuple(float(s) for s in data_cfg["std"]),
        interpolation=str(data_cfg.get("interpolation", "bilinear")),
    )


# each model's head parameter names, found once (the first call's img_size): kept beside the model, not on it
_HEADS: weakref.WeakKeyDictionary[nn.Module, set[str]] = weakref.WeakKeyDictionary()


def head_parameter_names(model: nn.Module, img_size: tuple[int, int] = (64, 64)) -> set[str]:
    """Names of the parameters `forward_head` uses: everything `forward_features` does not touch.

    Found by autograd, so it follows timm's own split for CNNs and ViTs alike (convnext's head norm,
    a ViT's `fc_norm` and classifier land in the head; a ViT's `cls_token` and `pos_embed` do not).
    """
    if model in _HEADS:
        return _HEADS[model]
    if is_segmentation_model(model):  # smp: the encoder is the backbone, decoder and head train anew
        _HEADS[model] = {n for n, _ in model.named_parameters() if not n.startswith("encoder.")}
        return _HEADS[model]
    was_training = model.training
    model.eval()
    named = [(n, p) for n, p in model.named_parameters()]
    flags = [p.requires_grad for _, p in named]
    for _, p in named:
        p.requires_grad_(True)
    try:
        size = getattr(model, "pretrained_cfg", {}).get("input_size", (3, *img_size))[1:]
        if getattr(model, "pretrained_cfg", {}).get("fixed_input_size"):
            x = torch.zeros(1, 3, *size)
        else:
            x = torch.zeros(1, 3, *img_size)
        features = model.forward_features(x)
        if isinstance(features, (list, tuple)):
            features = features[-1]
        grads = torch.autograd.grad(features.float().sum(), [p for _, p in named], allow_unused=True)
    finally:
        for (_, p), flag in zip(named, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    head = {n for (n, _), g in zip(named, grads) if g is None}
    if not head:
        raise ConfigError(
            f"could not find the head of {type(model).__name__}: forward_features uses everything"
        )
    _HEADS[model] = head
    return head


def backbone_layers(model: nn.Module) -> list[str]:
    """The backbone's layers from the input side: the modules that hold parameters of their own (convs,
    norms, linears, a ViT's embeddings), in the order the model registers them (timm's: input first)."""
    head = head_parameter_names(model)
    return list(dict.fromkeys(_owner(n) for n, _ in model.named_parameters() if n not in head))


def _owner(name: str) -> str:
    """The module holding the parameter `name` ("" for a parameter of the model itself)."""
    return name.rsplit(".", 1)[0] if "." in name else ""


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def frozen_parameter_names(
    model: nn.Module, freeze_backbone: bool, freeze: list[str] | float | None, where: str
) -> set[str]:
    """Names of the parameters a stage freezes: the backbone's with `freeze_backbone`; with `freeze`,
    those a module-name pattern matches (fnmatch, against the parameter's name or any module above it:
    "layer1.*", "conv1", "blocks.[0-5].*") or, for a fraction, those of the first `freeze × len(layers)`
    of `backbone_layers`. A pattern that matches nothing, a fraction outside [0, 1] or a stage that
    leaves nothing to train is a ConfigError naming `where`."""
    head = head_parameter_names(model)
    names = [n for n, _ in model.named_parameters()]
    frozen = {n for n in names if n not in head} if freeze_backbone else set()
    if isinstance(freeze, bool):
        raise ConfigError(
            f"field '{where}': expected module-name patterns or a fraction, got {freeze} (use freeze_backbone)"
        )
    if isinstance(freeze, (int, float)):
        if not 0.0 <= freeze <= 1.0:
            raise ConfigError(
                f"field '{where}': a fraction of the backbone's layers is between 0 and 1, got {freeze}"
            )
        layers = backbone_layers(model)
        first = set(layers[: round(freeze * len(layers))])
        frozen |= {n for n in names if n not in head and _owner(n) in first}
    elif freeze:
        patterns = [freeze] if isinstance(freeze, str) else list(freeze)
        for pattern in patterns:
            matched = {n for n in names if any(fnmatch.fnmatchcase(q, pattern) for q in _prefixes(n))}
            if not matched:
                top = list(dict.fromkeys(n.split(".")[0] for n in names))
                raise ConfigError(
                    f"field '{where}': pattern {pattern!r} matches no parameter of the model "
                    f"(its top-level modules: {', '.join(top)})"
                )
            frozen |= matched
    if frozen and len(frozen) == len(names):
        raise ConfigError(f"field '{where}': the stage freezes every parameter, so it has nothing to train")
    return frozen


def set_frozen(model: nn.Module, frozen: set[str]) -> None:
    """Every parameter trains but those named in `frozen`."""
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)


def frozen_norm_modules(model: nn.Module, frozen: set[str], backbone: bool) -> list[nn.Module]:
    """BatchNorm layers to keep in eval mode: those whose parameters are all frozen, and with
    `backbone` (the backbone frozen) every backbone BatchNorm, affine or not."""
    found = backbone_norm_modules(model) if backbone else []
    seen = {id(m) for m in found}
    for name, m in model.named_modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm) or id(m) in seen:
            continue
        params = [f"{name}.{n}" if name else n for n, _ in m.named_parameters(recurse=False)]
        if params and all(p in frozen for p in params):
            found.append(m)
    return found


def backbone_norm_modules(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers of the backbone (their running statistics move in train mode)."""
    head_modules = {n.rsplit(".", 1)[0] for n in head_parameter_names(model)}
    return [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and name not in head_modules
    ]


def check_input_size(model: nn.Module, img_size: tuple[int, int]) -> None:
    """A segmentation model's encoder divides the image by its output stride: one forward pass at
    `img_size` now, so a size that does not divide stops with one sentence before anything is written."""
    if not is_segmentation_model(model):
        return
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, *img_size))
        if tuple(out.shape[2:]) != tuple(img_size):
            raise RuntimeError(f"its output is {out.shape[2]}×{out.shape[3]}, not the input's size")
    except RuntimeError as e:
        raise ConfigError(
            f"field 'data.img_size': {type(model).__name__} over {type(model.encoder).__name__} cannot take "
            f"{img_size[0]}×{img_size[1]} images ({str(e).splitlines()[0]})"
        ) from None
    finally:
        model.train(was_training)
