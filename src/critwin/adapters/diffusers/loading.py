"""Local model directories and prompt-embedding files; nothing here downloads."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import diffusers
import torch
from safetensors import SafetensorError, safe_open

from critwin._files import check_weights, load_tensor_file
from critwin._io import read_json
from critwin._memory import GRID_BYTES, check_memory, unet_bytes
from critwin._validation import check_device
from critwin.adapters.diffusers.schedule import SCHEDULER_ALIASES, is_supported, scheduler_class

__all__ = ["LocalPipeline", "load_local", "load_prompt_embeds"]

_PIPELINES = (
    "DDPMPipeline",
    "DDIMPipeline",
    "StableDiffusionPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusion3Pipeline",
    "PixArtAlphaPipeline",
    "PixArtSigmaPipeline",
    "DiTPipeline",
    "FluxPipeline",
)

_EMBED_KEYS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
    "prompt_attention_mask",
    "negative_prompt_attention_mask",
)


class LocalPipeline:
    """The parts of a diffusers pipeline directory that :func:`from_pipeline` needs (no transformers).

    ``unet`` holds the denoising network: the pipeline's UNet, or its transformer (SD3, PixArt, DiT, Flux).
    """

    def __init__(self, path, class_name, unet, scheduler, vae=None, text_encoder=None, tokenizer=None):
        self.name_or_path = str(path)
        self.class_name = class_name
        self.unet, self.scheduler, self.vae = unet, scheduler, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def load_local(path, scheduler: str | None = None, device=None, dtype=None, text_encoder: bool = False):
    """Load a local diffusers pipeline directory (``save_pretrained`` layout); never downloads.

    Parameters
    ----------
    path : directory with ``model_index.json`` (DDPM/DDIM, Stable Diffusion, SDXL, SD3, PixArt-α/Σ, DiT or
        Flux pipeline).
    scheduler : replace the saved scheduler by this supported class (name or alias), built from its config.
    device, dtype : where and in which precision the UNet and VAE run.
    text_encoder : load the full pipeline with its tokenizer and text encoder (for text prompts; needs
        transformers). Otherwise only UNet, scheduler and VAE are loaded.

    Returns
    -------
    The pipeline (``text_encoder=True``) or a :class:`LocalPipeline`; pass it to :func:`from_pipeline`.
    Weights are read from safetensors files only.

    Examples
    --------
    A toy pipeline saved with ``save_pretrained`` and loaded back with another scheduler:

    >>> import pathlib, tempfile
    >>> import torch, critwin
    >>> from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    >>> unet = UNet2DModel(  # an untrained toy UNet
    ...     sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
    ...     down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4,
    ... )
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "toy"
    >>> DDPMPipeline(unet=unet, scheduler=DDPMScheduler(timestep_spacing="trailing")).save_pretrained(path)
    >>> pipe = critwin.load_local(path, scheduler="ddim")
    >>> critwin.from_pipeline(pipe, num_inference_steps=10)
    DiffusersProcess(model=..., scheduler=DDIMScheduler, clock=ou, steps=10, t_max=5.059, t_end=0)
    """
    device = None if device is None else check_device(device)  # before anything is read
    root = Path(path)
    index = _read_index(root)
    check_configs(root, index)
    options: dict[str, Any] = dict(local_files_only=True)
    if dtype is not None:
        options["torch_dtype"] = dtype
    try:
        new_scheduler = _load_scheduler(root, index, scheduler)
        if text_encoder:
            return _load_full_pipeline(root, index, new_scheduler, device, options)
        net = "unet" if "unet" in _components(index) else "transformer"
        unet = getattr(diffusers, index[net][1]).from_pretrained(
            root, subfolder=net, use_safetensors=True, **options
        )
        vae = None
        if "vae" in _components(index):
            vae = getattr(diffusers, index["vae"][1]).from_pretrained(
                root, subfolder="vae", use_safetensors=True, **options
            )
    except (OSError, TypeError, AttributeError, KeyError, IndexError, RuntimeError, SafetensorError) as exc:
        # Missing, truncated or mistyped component files surface as any of these inside diffusers.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not load the diffusers model in {root}: {first}") from None
    _check_loaded(root, index, unet, vae)
    unet = unet.to(device=device).eval()
    if vae is not None:
        vae = vae.to(device=device).eval()
    return LocalPipeline(root, index["_class_name"], unet, new_scheduler, vae)


# Config entries that are sizes (integers >= 1, or lists of them): a negative or zero one is refused by
# name before diffusers builds anything from it.
_SIZE_KEYS = (
    "sample_size",
    "in_channels",
    "out_channels",
    "latent_channels",
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "cross_attention_dim",
    "attention_head_dim",
    "num_attention_heads",
    "num_layers",
    "patch_size",
    "num_train_timesteps",
)
_NETWORKS = ("unet", "transformer", "vae")
# Entries whose diffusers default is infinite (DPM-Solver's "no clipping"); NaN is refused everywhere.
_INFINITE_KEYS = ("lambda_min_clipped",)


def check_configs(root: Path, index: Mapping[str, Any]) -> None:
    """The configs of a pipeline directory, read before any component is built: every number finite,
    every size (:data:`_SIZE_KEYS`) an integer >= 1, the networks within the memory guard, and every
    weights file of a float weight dtype. Errors name the file and the key."""
    present = _components(index)
    for folder in (name for name in (*_NETWORKS, "scheduler") if name in present):
        file = root / folder / ("scheduler_config.json" if folder == "scheduler" else "config.json")
        if not file.is_file():
            continue  # diffusers reports a missing component file itself
        config = read_json(file, f"{folder} config")
        for key, value in config.items():
            _check_config_value(file, key, value)
        if folder in _NETWORKS:
            _check_network_size(file, config)
            _check_weight_dtypes(root / folder)
        elif isinstance(config.get("num_train_timesteps"), int):
            steps = config["num_train_timesteps"]
            check_memory(GRID_BYTES * steps, f"the schedule of {file} (num_train_timesteps={steps})")


def _check_config_value(file: Path, key: str, value) -> None:
    infinite_ok = key in _INFINITE_KEYS and isinstance(value, float) and math.isinf(value)
    if isinstance(value, float) and not math.isfinite(value) and not infinite_ok:
        raise ValueError(f"{file}: {key} must be a finite number, got {value}")
    if key not in _SIZE_KEYS or value is None:
        return
    sizes = value if isinstance(value, list) else [value]
    if not sizes or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes):
        raise ValueError(f"{file}: {key} must be an integer >= 1 (or a list of them), got {value!r}")


def _check_network_size(file: Path, config: Mapping[str, Any]) -> None:
    """The memory guard on a network's declared sizes: diffusers allocates the network from its config
    before it reads the weights."""
    channels = config.get("block_out_channels")
    if isinstance(channels, list) and channels:
        check_memory(
            unet_bytes(channels, int(config.get("layers_per_block") or 1)),
            f"the network of {file} (block_out_channels={channels})",
        )


def _check_weight_dtypes(folder: Path) -> None:
    """Every tensor of the folder's safetensors files is of a float weight dtype (header only)."""
    allowed = {"F32", "F16", "BF16"}
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                dtypes = {key: handle.get_slice(key).get_dtype() for key in handle.keys()}
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"weights file {file} is corrupt ({exc})") from None
        for key, dtype in dtypes.items():
            if dtype not in allowed:
                raise ValueError(
                    f"weights file {file}: {key} is {dtype}, not a weight dtype (F32, F16, BF16); the file "
                    "is not a network's weights"
                )


def _check_loaded(root: Path, index: Mapping[str, Any], net, vae) -> None:
    """The loaded network's and VAE's values: finite and plausible (:func:`critwin._files.check_weights`)."""
    folder = "unet" if "unet" in _components(index) else "transformer"
    for name, module in ((folder, net), ("vae", vae)):
        if module is not None and hasattr(module, "state_dict"):
            check_weights(module.state_dict(), root / name)


def _components(index: Mapping[str, Any], present: bool = True) -> set[str]:
    """Names of the components ``model_index.json`` lists as present (or, ``present=False``, as absent)."""
    return {
        k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and (v[0] is not None) == present
    }


def _read_index(root: Path) -> dict[str, Any]:
    """``model_index.json`` of a supported pipeline with a UNet (or transformer) and a scheduler."""
    if not root.exists():
        raise FileNotFoundError(f"model path {root} does not exist")
    index_file = root / "model_index.json"
    if not root.is_dir() or not index_file.is_file():
        raise ValueError(f"model path {root} is not a diffusers pipeline directory (no model_index.json)")
    index = read_json(index_file, "pipeline index")
    class_name = index.get("_class_name")
    if class_name not in _PIPELINES:
        raise ValueError(
            f"model path {root} holds a {class_name!r}; supported pipelines: {', '.join(_PIPELINES)}"
        )
    present = _components(index)
    if "scheduler" not in present:
        raise ValueError(f"model path {root} has no scheduler component")
    if not present & {"unet", "transformer"}:
        raise ValueError(f"model path {root} has no unet (or transformer) component")
    return index


def _load_scheduler(root: Path, index: Mapping[str, Any], scheduler: str | None):
    """The saved scheduler, or the ``scheduler`` class (name or alias) built from its config."""
    entry = index["scheduler"]
    saved_class = getattr(diffusers, entry[1], None) if isinstance(entry[1], str) else None
    if not isinstance(saved_class, type) or not hasattr(saved_class, "from_pretrained"):
        raise ValueError(f"{root / 'model_index.json'} names an unknown scheduler class {entry[1]!r}")
    saved = saved_class.from_pretrained(root, subfolder="scheduler", local_files_only=True)
    if scheduler is not None:
        return scheduler_class(scheduler).from_config(saved.config)
    if not is_supported(saved):
        raise ValueError(
            f"the saved scheduler {type(saved).__name__} is not supported; pick one built from its config "
            f"with scheduler= (CLI: --scheduler): {', '.join(SCHEDULER_ALIASES)}"
        )
    return saved


def _load_full_pipeline(root: Path, index: Mapping[str, Any], scheduler, device, options):
    """The whole pipeline, tokenizer and text encoder included (needs transformers)."""
    missing = dict.fromkeys(_components(index, present=False))
    pipe = getattr(diffusers, index["_class_name"]).from_pretrained(
        root, use_safetensors=True, scheduler=scheduler, **missing, **options
    )
    _check_loaded(
        root,
        index,
        getattr(pipe, "unet", None) or getattr(pipe, "transformer", None),
        getattr(pipe, "vae", None),
    )
    if getattr(pipe, "tokenizer", None) is None or getattr(pipe, "text_encoder", None) is None:
        raise ValueError(
            f"a text prompt needs a tokenizer and text encoder in {root}; pass prompt embeddings"
        )
    pipe.to(device=device)
    return pipe


def load_prompt_embeds(path) -> dict[str, torch.Tensor]:
    """Prompt embeddings from a ``.safetensors`` file or a ``.pt`` file (``torch.load(weights_only=True)``).

    The file holds a single tensor (the prompt embeddings) or tensors named ``prompt_embeds`` and
    optionally ``negative_prompt_embeds``, ``pooled_prompt_embeds``, ``negative_pooled_prompt_embeds``
    (SDXL, SD3, Flux), ``prompt_attention_mask``, ``negative_prompt_attention_mask`` (PixArt).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt embeddings file {path} does not exist")
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"prompt embeddings file must end in .safetensors or .pt, got {path.name}")
    data = load_tensor_file(path, "prompt embeddings")
    if isinstance(data, torch.Tensor):
        data = {"prompt_embeds": data}
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} must hold a tensor or a dict of tensors named {', '.join(_EMBED_KEYS)}")
    unknown = sorted(set(data) - set(_EMBED_KEYS))
    if unknown:
        raise ValueError(
            f"{path} has unknown entries {unknown}; expected names among {', '.join(_EMBED_KEYS)}"
        )
    if "prompt_embeds" not in data:
        raise ValueError(f"{path} has no 'prompt_embeds' entry")
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        if key in data and data[key].ndim != 3:
            raise ValueError(
                f"{key} in {path} must have shape (batch, seq_len, dim), got {tuple(data[key].shape)}"
            )
    return dict(data)
