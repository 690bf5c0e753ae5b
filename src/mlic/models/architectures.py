"""Building a network by name: a timm classifier, or a segmentation-models-pytorch (smp) model over an
encoder. Both the run (`mlic.models.build.create_model`) and a model file (`mlic.experiment.checkpoints.load_model_file`)
build through `build_network`, so a saved model is rebuilt exactly as it was trained."""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import timm
from torch import nn

from mlic.utils.errors import ConfigError

SMP_DEFAULT_ENCODER = "resnet34"  # smp's own default


def smp_architectures() -> list[str]:
    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def build_network(
    family: str,
    name: str,
    num_classes: int,
    kwargs: dict[str, Any],
    encoder: str | None = None,
    hub_weights: bool = False,
    drop_rate: float | None = None,
) -> nn.Module:
    """A timm model `name` with `num_classes` outputs (`family="timm"`), or the smp architecture `name`
    (Unet, FPN, DeepLabV3Plus, ...; any case) over `encoder` with `num_classes` output channels
    (`family="smp"`). `hub_weights` asks for the library's pretrained weights (ImageNet for an smp
    encoder), which need the internet. A TypeError or KeyError of the library is a ConfigError."""
    if family == "timm":
        extra = {} if drop_rate is None else {"drop_rate": drop_rate}
        try:
            return timm.create_model(name, pretrained=hub_weights, num_classes=num_classes, **extra, **kwargs)
        except TypeError as e:
            raise ConfigError(
                f"field 'model.kwargs': timm cannot build {name!r} with {kwargs}: {e}"
            ) from None
    archs = smp_architectures()
    if name.lower() not in archs:
        raise ConfigError(
            f"field 'model.name': segmentation-models-pytorch has no architecture {name!r} "
            f"(one of {', '.join(archs)})"
        )
    encoder = encoder or SMP_DEFAULT_ENCODER
    try:
        return smp.create_model(
            name,
            encoder_name=encoder,
            encoder_weights="imagenet" if hub_weights else None,
            classes=num_classes,
            **kwargs,
        )
    except KeyError as e:
        message = str(e.args[0]) if e.args else str(e)
        if "encoder" in message.lower():
            raise ConfigError(
                f"field 'model.encoder': segmentation-models-pytorch has no encoder {encoder!r}; use one of "
                f"smp's encoder names (resnet18, efficientnet-b0, mit_b0, ...) or 'tu-' and a timm model "
                f"name (tu-resnet10t, tu-convnext_tiny)"
            ) from None
        raise ConfigError(
            f"field 'model.kwargs': smp cannot build {name!r} with {kwargs}: {message}"
        ) from None
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError(
            f"field 'model.kwargs': smp cannot build {name!r} over {encoder!r} with {kwargs}: {e}"
        ) from None


def is_segmentation_model(model: nn.Module) -> bool:
    """An smp model: an encoder, a decoder and a segmentation head."""
    return hasattr(model, "encoder") and hasattr(model, "segmentation_head")
