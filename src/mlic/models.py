"""timm model factory, weight and checkpoint loading, backbone/head split, freezing, parameter groups."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from mlic.config import Model
from mlic.errors import CheckpointError, ConfigError

log = logging.getLogger("mlic")


@dataclass
class Preprocessing:
    """What a model expects of its input: size (height, width), interpolation and normalisation."""

    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str


def create_model(cfg: Model, num_classes: int) -> nn.Module:
    """Create the timm model `cfg.name` with `num_classes` outputs and the weights `cfg` asks for."""
    if cfg.name not in timm.list_models() and not timm.is_model(cfg.name):
        close = timm.list_models(f"*{cfg.name}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ConfigError(f"field 'model.name': timm has no model {cfg.name!r}{hint}")
    use_hub = cfg.pretrained is True
    try:
        model = timm.create_model(
            cfg.name, pretrained=use_hub, num_classes=num_classes, drop_rate=cfg.drop_rate, **cfg.kwargs
        )
    except TypeError as e:
        raise ConfigError(
            f"field 'model.kwargs': timm cannot build {cfg.name!r} with {cfg.kwargs}: {e}"
        ) from None
    except (OSError, RuntimeError) as e:
        if use_hub:
            raise CheckpointError(
                f"could not fetch timm's pretrained weights for {cfg.name!r} ({type(e).__name__}); without "
                f"internet set model.pretrained to a local weights file, or False"
            ) from None
        raise
    if isinstance(cfg.pretrained, str):
        load_pretrained_file(model, Path(cfg.pretrained))
    return model


def _read_state_dict(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same sentence
        raise CheckpointError(
            f"{what} {path} cannot be read as torch weights ({type(e).__name__}: {e})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, meta = obj, {}
    else:
        raise CheckpointError(f"{what} {path} holds no state_dict")
    # Lightning checkpoints prefix the model's keys with the attribute that holds it.
    # (a loss with buffers of its own adds keys like `loss_fn.pos_weight` beside the model's)
    model_keys = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if model_keys and all(k.startswith(("model.", "loss_fn.")) for k in state):
        state = model_keys
    return state, meta


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
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape and k not in head]
    missing = [k for k in own if k not in state and k not in head]
    unexpected = [k for k in state if k not in own and k not in head]
    if bad or len(missing) > 0 or len(unexpected) > len(state) // 2:
        detail = (
            f"{len(bad)} tensors of another shape (first: {bad[0]})"
            if bad
            else f"{len(missing)} of the model's tensors are missing (first: {missing[0]})"
            if missing
            else f"{len(unexpected)} tensors belong to another model (first: {unexpected[0]})"
        )
        raise CheckpointError(f"{what} {path} does not fit {type(model).__name__}: {detail}")
    load = {k: v for k, v in state.items() if k in own and (keep_head or k not in head)}
    load = {k: v for k, v in load.items() if own[k].shape == v.shape}
    model.load_state_dict(load, strict=False)


def load_pretrained_file(model: nn.Module, path: Path) -> None:
    """Load local backbone weights (like timm's pretrained ones); the head stays freshly initialised."""
    state, _ = _read_state_dict(path, "model.pretrained weights file")
    _load_into(model, state, path, "model.pretrained weights file", keep_head=False)
    log.info("loaded backbone weights from %s; the classification head is newly initialised", path)


def load_checkpoint(model: nn.Module, path: Path, model_name: str, classes: list[str]) -> bool:
    """Start from another experiment's model file; re-create the head when its classes differ.

    Returns whether the head came from the checkpoint (False: it is newly initialised)."""
    state, meta = _read_state_dict(path, "model.checkpoint")
    saved_name = meta.get("model_name")
    if saved_name and saved_name != model_name:
        raise CheckpointError(
            f"model.checkpoint {path} was trained as {saved_name!r} but the config builds {model_name!r}; "
            f"set model.name={saved_name!r} or pick a checkpoint of {model_name!r}"
        )
    saved_classes = meta.get("classes")
    if saved_classes is None:
        # a Lightning .ckpt or a bare state dict: no class list, so only the head's shape can tell
        own = model.state_dict()
        head = _head_keys(model)
        if any(k in state and state[k].shape != own[k].shape for k in head):
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
    data_cfg = timm.data.resolve_data_config({}, model=model)
    size = tuple(img_size) if img_size else tuple(data_cfg["input_size"][1:])
    return Preprocessing(
        img_size=(int(size[0]), int(size[1])),
        mean=tuple(float(m) for m in data_cfg["mean"]),
        std=tuple(float(s) for s in data_cfg["std"]),
        interpolation=str(data_cfg.get("interpolation", "bilinear")),
    )


def head_parameter_names(model: nn.Module, img_size: tuple[int, int] = (64, 64)) -> set[str]:
    """Names of the parameters `forward_head` uses: everything `forward_features` does not touch.

    Found by autograd, so it follows timm's own split for CNNs and ViTs alike (convnext's head norm,
    a ViT's `fc_norm` and classifier land in the head; a ViT's `cls_token` and `pos_embed` do not).
    """
    cached = getattr(model, "_mlic_head_names", None)
    if cached is not None:
        return cached
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
    model._mlic_head_names = head  # type: ignore[attr-defined]
    return head


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze every backbone parameter; head parameters always train."""
    head = head_parameter_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(trainable or name in head)


def backbone_norm_modules(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers of the backbone (their running statistics move in train mode)."""
    head_modules = {n.rsplit(".", 1)[0] for n in head_parameter_names(model)}
    return [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and name not in head_modules
    ]


def _no_decay(name: str, p: torch.Tensor, skip: set[str]) -> bool:
    return p.ndim <= 1 or name.endswith(".bias") or name in skip


def parameter_groups(
    model: nn.Module, lr: float, backbone_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters: backbone/head × decay/no-decay (norms, biases)."""
    head = head_parameter_names(model)
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    buckets: dict[tuple[str, bool], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if name in head else "backbone"
        buckets.setdefault((part, _no_decay(name, p, skip)), []).append(p)
    groups = []
    for (part, no_decay), params in sorted(buckets.items()):
        groups.append(
            {
                "params": params,
                "lr": lr if part == "head" else backbone_lr,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{part}{'/no_decay' if no_decay else ''}",
            }
        )
    return groups


@dataclass
class ModelFile:
    """A model file (`model.best.pth`, `model.swa.pth`, ...) rebuilt as a ready-to-run eval-mode model."""

    model: nn.Module
    model_name: str
    classes: list[str]
    prep: Preprocessing
    threshold: float
    metrics: dict[str, Any]


def load_model_file(path: Path) -> ModelFile:
    """Rebuild the timm model a mlic model file describes and load its weights (nothing is downloaded)."""
    path = Path(path)
    state, meta = _read_state_dict(path, "model file")
    missing = [k for k in ("model_name", "classes", "img_size", "normalization") if k not in meta]
    if missing:
        raise CheckpointError(
            f"model file {path} is not a mlic model file (it has no {', '.join(missing)}); use the "
            f"model.best.pth, model.last.pth or model.swa.pth of an experiment"
        )
    kwargs = dict(meta.get("model_kwargs") or {})
    try:
        model = timm.create_model(
            meta["model_name"], pretrained=False, num_classes=len(meta["classes"]), **kwargs
        )
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(
            f"model file {path} cannot be loaded into {meta['model_name']!r}: {e}"
        ) from None
    norm = meta["normalization"]
    prep = Preprocessing(
        tuple(meta["img_size"]),
        tuple(norm["mean"]),
        tuple(norm["std"]),
        norm.get("interpolation", "bilinear"),
    )
    return ModelFile(
        model.eval(),
        meta["model_name"],
        list(meta["classes"]),
        prep,
        float(meta.get("threshold", 0.5)),
        dict(meta.get("metrics", {})),
    )


def earlier_runs(exp_dir: Path) -> list[Path]:
    """Folders an experiment's earlier runs were moved to (`<name>.<date-time>`), oldest first."""
    exp_dir = Path(exp_dir)
    return sorted(p for p in exp_dir.parent.glob(f"{exp_dir.name}.*") if p.is_dir())


def resolve_model_file(exp_dir: Path, weights: str | Path = "model.best.pth") -> Path:
    """The model file `weights` inside the experiment folder, else `weights` as a path; else one sentence
    saying what the folder holds (and where its previous run went, if a rerun moved it)."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise CheckpointError(f"experiment folder {exp_dir} does not exist; pass the folder train.py wrote")
    for candidate in (exp_dir / weights, Path(weights)):
        if candidate.is_file():
            return candidate
    held = sorted(p.name for p in exp_dir.glob("*.pth"))
    holds = f"it holds {', '.join(held)}" if held else "it holds no model file (*.pth)"
    message = f"model file {weights} is not in {exp_dir} nor a file; {holds}"
    older = earlier_runs(exp_dir)
    if older:
        message += f"; the previous run of this experiment was moved to {older[-1]}"
    raise CheckpointError(message)
