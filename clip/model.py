"""CLIP model: image and text towers with OpenAI's module layout and parameter names.

Every parameter has the name it has in OpenAI's published checkpoints, so
``build_model(state_dict)`` loads an official file unchanged, and code written against OpenAI's
``clip`` package (CoOp's ``TextEncoder``, prompt learners that read ``visual.conv1``,
``visual.class_embedding``, ``transformer.resblocks``...) works on these modules.

Conventions shared with OpenAI's implementation:

* ``Transformer`` and ``ResidualAttentionBlock`` take and return **sequence-first** tensors
  ``[L, N, D]``.
* The text tower is causal. Its mask is stored at ``context_length`` and sliced to ``[:L, :L]``,
  so the blocks accept any sequence length ``L <= context_length``.
* ``LayerNorm`` computes in fp32 and casts back to the input dtype.
* ``encode_text`` pools the feature at the position of the largest token id (``<|endoftext|>``).

Precision: ``CLIP(...)`` gives **fp32** weights. ``convert_weights(model)`` converts them in
place the way OpenAI's ``build_model`` does (Conv/Linear/attention weights and the two projections
to fp16; embeddings, LayerNorms, BatchNorms and ``logit_scale`` stay fp32). ``build_model(sd)``
returns that mixed fp16 layout, as OpenAI's does, so code written for OpenAI's package (CoOp's
``PREC fp16``) really runs in fp16; ``build_model(sd, precision="fp32")`` keeps every weight fp32
with the exact values of ``sd`` (no fp16 round trip). ``clip.load`` uses ``precision="fp16"`` on
CUDA by default and ``"fp32"`` elsewhere.

Random numbers: OpenAI's ``build_model`` constructs the model with its random initialization
before loading the weights, which advances the global torch (CPU) generator by an amount that
depends on the architecture; everything a seeded run draws afterwards (prompt initialization, data
order) depends on it. ``CLIP.__init__`` draws in OpenAI's order (module construction, then
``initialize_parameters``), and ``build_model`` / ``clip.load`` construct the model the same way
before loading, so a run seeded as an upstream run draws the same numbers after loading CLIP.
``build_model_from_config`` is the way to get a randomly initialized model.

Other architectures (open_clip's LAION, DataComp, MetaCLIP, ... models, ``clip.open_clip_models``)
use the same modules and parameter names with keyword-only options of ``CLIP``: attention heads of
the image tower, MLP widths, and the activation (QuickGELU, OpenAI's default, or GELU).
``build_model_with_config(state_dict, config)`` loads such a model without drawing random numbers.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "MODEL_CONFIGS",
    "AttentionPool2d",
    "Bottleneck",
    "CLIP",
    "LayerNorm",
    "ModifiedResNet",
    "QuickGELU",
    "ResidualAttentionBlock",
    "Transformer",
    "VisionTransformer",
    "build_model",
    "build_model_from_config",
    "build_model_with_config",
    "config_from_state_dict",
    "convert_weights",
    "half_tensor_names",
]

# The published architectures, as keyword arguments of ``CLIP``. A tuple ``vision_layers`` means a
# ModifiedResNet image tower (blocks per stage); an int means a VisionTransformer.
_TEXT = dict(context_length=77, vocab_size=49408, transformer_layers=12)
MODEL_CONFIGS: dict[str, dict] = {
    "RN50": dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None, transformer_width=512, transformer_heads=8, **_TEXT),
    "RN101": dict(embed_dim=512, image_resolution=224, vision_layers=(3, 4, 23, 3), vision_width=64,
                  vision_patch_size=None, transformer_width=512, transformer_heads=8, **_TEXT),
    "RN50x4": dict(embed_dim=640, image_resolution=288, vision_layers=(4, 6, 10, 6), vision_width=80,
                   vision_patch_size=None, transformer_width=640, transformer_heads=10, **_TEXT),
    "RN50x16": dict(embed_dim=768, image_resolution=384, vision_layers=(6, 8, 18, 8),
                    vision_width=96, vision_patch_size=None, transformer_width=768,
                    transformer_heads=12, **_TEXT),
    "RN50x64": dict(embed_dim=1024, image_resolution=448, vision_layers=(3, 15, 36, 10),
                    vision_width=128, vision_patch_size=None, transformer_width=1024,
                    transformer_heads=16, **_TEXT),
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, transformer_width=512, transformer_heads=8, **_TEXT),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=16, transformer_width=512, transformer_heads=8, **_TEXT),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                     vision_patch_size=14, transformer_width=768, transformer_heads=12, **_TEXT),
    "ViT-L/14@336px": dict(embed_dim=768, image_resolution=336, vision_layers=24,
                           vision_width=1024, vision_patch_size=14, transformer_width=768,
                           transformer_heads=12, **_TEXT),
}
del _TEXT


class LayerNorm(nn.LayerNorm):
    """LayerNorm that computes in fp32 and returns the input's dtype (fp16-safe)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig_type = x.dtype
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        out = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(orig_type)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# The MLP activations a CLIP may use: OpenAI's QuickGELU (the default) or the exact GELU that most
# open_clip models (LAION, DataComp, ...) were trained with. Neither has parameters, so the choice
# never changes the state dict.
ACTIVATIONS = ("quick_gelu", "gelu")


def _activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block on sequence-first input ``[L, N, D]``.

    ``mlp_width`` (default ``4 * d_model``, OpenAI's) is the hidden width of the MLP and
    ``activation`` its activation (``"quick_gelu"``, OpenAI's, or ``"gelu"``).

    ``attn_mask`` (optional, additive float mask ``[S, S]``) is kept as a non-persistent buffer,
    so it follows ``.to()`` but is not part of the state dict; it is sliced to ``[:L, :L]`` for a
    sequence of length ``L``.
    """

    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor | None = None,
                 mlp_width: int | None = None, activation: str = "quick_gelu"):
        super().__init__()
        mlp_width = mlp_width or d_model * 4
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, mlp_width)),
            ("gelu", _activation(activation)),     # OpenAI's module name, whichever activation
            ("c_proj", nn.Linear(mlp_width, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.register_buffer("attn_mask", attn_mask, persistent=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.attn_mask
        if mask is not None:
            n = x.shape[0]
            if n > mask.shape[0]:
                raise ValueError(
                    f"sequence length {n} exceeds the attention mask size {mask.shape[0]} "
                    "(the model's context_length)")
            mask = mask[:n, :n].to(dtype=x.dtype, device=x.device)
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """A stack of ``ResidualAttentionBlock`` on sequence-first input ``[L, N, D]``."""

    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor | None = None,
                 mlp_width: int | None = None, activation: str = "quick_gelu"):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, attn_mask, mlp_width, activation)
             for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    """ViT image tower: patch conv, [CLS] + positional embedding, ln_pre, blocks, ln_post, proj."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int,
                 heads: int, output_dim: int, mlp_width: int | None = None,
                 activation: str = "quick_gelu"):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_width=mlp_width,
                                       activation=activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` -> token embeddings ``[N, 1 + grid**2, width]`` (before ln_pre)."""
        x = self.conv1(x)                                   # [N, width, g, g]
        x = x.flatten(2).permute(0, 2, 1)                   # [N, g*g, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        return x + self.positional_embedding.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(self.embed(x))
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)   # NLD -> LND -> NLD
        x = self.ln_post(x[:, 0, :])
        if self.proj is not None:
            x = x @ self.proj
        return x


class Bottleneck(nn.Module):
    """ResNet bottleneck with anti-aliased downsampling (avgpool before the strided path)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        self.stride = stride
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean token queries all spatial tokens (QKV projections + c_proj)."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int,
                 output_dim: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(
            torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        x = x.flatten(2).permute(0, 2, 1)                       # [N, HW, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # [N, HW+1, C]
        x = x + self.positional_embedding.to(x.dtype)
        h = self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:             # [N, S, C] -> [N, h, S, C/h]
            return t.reshape(n, t.shape[1], h, c // h).transpose(1, 2)

        q = heads(self.q_proj(x[:, :1]))
        k = heads(self.k_proj(x))
        v = heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)            # [N, h, 1, C/h]
        out = out.transpose(1, 2).reshape(n, c)
        return self.c_proj(out)


class ModifiedResNet(nn.Module):
    """OpenAI's ResNet image tower: 3-conv stem + avgpool, anti-aliased stages, attention pooling."""

    def __init__(self, layers: Sequence[int], output_dim: int, heads: int,
                 input_resolution: int = 224, width: int = 64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        # stem
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        # residual stages
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.type(self.conv1.weight.dtype)
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return self.attnpool(x)


class CLIP(nn.Module):
    """Contrastive image-text model. Arguments in OpenAI's order; see ``MODEL_CONFIGS``.

    ``vision_layers`` is a 4-tuple for a ResNet image tower (then ``vision_patch_size`` is unused)
    or an int for a ViT.

    Keyword-only arguments for architectures other than OpenAI's (open_clip's LAION, DataComp,
    MetaCLIP, ... models, see ``clip.open_clip_models``); their defaults are OpenAI's:
    ``vision_heads`` (default ``vision_width // 64``; ResNet ``vision_width * 32 // 64``),
    ``vision_mlp_width`` and ``text_mlp_width`` (default 4 x the tower's width) and ``activation``
    (``"quick_gelu"``, OpenAI's, or ``"gelu"``). None of them changes a parameter name, and with
    the defaults the constructor draws exactly the random numbers OpenAI's draws.

    The order in which submodules are created and initialized is part of the interface: it draws
    from the global generator exactly as OpenAI's constructor does (``build_model`` relies on it to
    leave the generator where OpenAI's leaves it). Add new modules only after the existing ones.
    """

    def __init__(self, embed_dim: int, image_resolution: int,
                 vision_layers: int | Sequence[int], vision_width: int,
                 vision_patch_size: int | None, context_length: int, vocab_size: int,
                 transformer_width: int, transformer_heads: int, transformer_layers: int, *,
                 vision_heads: int | None = None, vision_mlp_width: int | None = None,
                 text_mlp_width: int | None = None, activation: str = "quick_gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.activation = activation
        if isinstance(vision_layers, (tuple, list)):
            self.visual = ModifiedResNet(layers=vision_layers, output_dim=embed_dim,
                                         heads=vision_heads or vision_width * 32 // 64,
                                         input_resolution=image_resolution, width=vision_width)
        else:
            self.visual = VisionTransformer(input_resolution=image_resolution,
                                            patch_size=vision_patch_size, width=vision_width,
                                            layers=vision_layers,
                                            heads=vision_heads or vision_width // 64,
                                            output_dim=embed_dim, mlp_width=vision_mlp_width,
                                            activation=activation)
        self.transformer = Transformer(width=transformer_width, layers=transformer_layers,
                                       heads=transformer_heads,
                                       attn_mask=self.build_attention_mask(),
                                       mlp_width=text_mlp_width, activation=activation)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation (scaled normals; zero-init of the last BN of each ResNet block)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features ** -0.5
            for lin in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(lin.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3,
                          self.visual.layer4):
                for block in stage:
                    nn.init.zeros_(block.bn3.weight)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def build_attention_mask(self) -> torch.Tensor:
        """Additive causal mask ``[context_length, context_length]``: -inf above the diagonal."""
        mask = torch.full((self.context_length, self.context_length), float("-inf"))
        return mask.triu_(1)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image.type(self.dtype))

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """Token ids ``[N, L]`` (L <= context_length) -> text features ``[N, embed_dim]``."""
        x = self.token_embedding(text).type(self.dtype)                 # [N, L, D]
        x = x + self.positional_embedding[: x.shape[1]].type(self.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)       # NLD -> LND -> NLD
        x = self.ln_final(x).type(self.dtype)
        x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]
        return x @ self.text_projection

    def forward(self, image: torch.Tensor, text: torch.Tensor):
        image_features = F.normalize(self.encode_image(image), dim=-1)
        text_features = F.normalize(self.encode_text(text), dim=-1)
        logit_scale = self.logit_scale.exp()
        logits_per_image = logit_scale * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


_MHA_HALF = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
             "bias_k", "bias_v")


def half_tensor_names(model: nn.Module) -> set[str]:
    """Qualified names of the tensors ``convert_weights`` makes fp16 (OpenAI's rule)."""
    names = set()
    for prefix, m in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            names.add(dot + "weight")
            if m.bias is not None:
                names.add(dot + "bias")
        if isinstance(m, nn.MultiheadAttention):
            names.update(dot + a for a in _MHA_HALF if getattr(m, a) is not None)
        for a in ("text_projection", "proj"):
            if isinstance(getattr(m, a, None), torch.Tensor):
                names.add(dot + a)
    return names


def convert_weights(model: nn.Module, dtype: torch.dtype = torch.float16) -> nn.Module:
    """Convert applicable weights to ``dtype`` in place, exactly as OpenAI's ``build_model`` does
    for fp16 (the trainers apply the same rule for bf16).

    Converted: Conv1d/Conv2d/Linear weights and biases, MultiheadAttention projection weights and
    biases, and the ``text_projection`` / ``proj`` parameters. Kept as they are (fp32): token and
    positional embeddings, ``class_embedding``, LayerNorm/BatchNorm parameters, ``logit_scale``,
    whose values a half type would round (``exp(logit_scale)`` 100.03 in fp16, 98.86 in bf16).
    Returns ``model`` for chaining.
    """
    half = half_tensor_names(model)
    for name, t in model.state_dict(keep_vars=True).items():
        if name in half and t.dtype != dtype:
            t.data = t.data.to(dtype)
    return model


# Entries of OpenAI's TorchScript archives that are not parameters.
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of distinct indices ``i`` among keys ``<prefix>.<i>.*``."""
    depth = prefix.count(".") + 1
    return len({k.split(".")[depth] for k in state_dict if k.startswith(prefix + ".")})


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Infer ``CLIP`` constructor arguments from an OpenAI-layout state dict."""
    sd = state_dict
    if "visual.proj" in sd:  # ViT
        vision_width = sd["visual.conv1.weight"].shape[0]
        vision_layers = len([k for k in sd
                             if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        vision_patch_size = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        image_resolution = vision_patch_size * grid
    elif "visual.attnpool.positional_embedding" in sd:  # ModifiedResNet
        vision_layers = tuple(_count_blocks(sd, f"visual.layer{b}") for b in (1, 2, 3, 4))
        vision_width = sd["visual.layer1.0.conv1.weight"].shape[0]
        output_width = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_patch_size = None
        image_resolution = output_width * 32
    else:
        raise ValueError("not a CLIP state dict: found neither 'visual.proj' (ViT) nor "
                         "'visual.attnpool.positional_embedding' (ResNet)")
    transformer_width = sd["ln_final.weight"].shape[0]
    return dict(
        embed_dim=sd["text_projection"].shape[1],
        image_resolution=int(image_resolution),
        vision_layers=vision_layers,
        vision_width=int(vision_width),
        vision_patch_size=None if vision_patch_size is None else int(vision_patch_size),
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        transformer_width=transformer_width,
        transformer_heads=transformer_width // 64,
        transformer_layers=_count_blocks(sd, "transformer.resblocks"),
    )


PRECISIONS = ("fp16", "fp32")


def _construct(config: Mapping) -> CLIP:
    """``CLIP(**config)`` with OpenAI's random initialization, on the CPU whatever the default
    device, so that it advances the global CPU generator exactly as OpenAI's ``build_model``."""
    with torch.device("cpu"):
        return CLIP(**config)


def _assign_weights(model: CLIP, state_dict: Mapping[str, torch.Tensor], copy: bool,
                    half: set[str] = frozenset()) -> None:
    """Strictly load ``state_dict`` into ``model`` on the CPU: the tensors named in ``half`` as
    fp16, the others in the model's dtype (fp32: the exact values). The loaded tensors replace the
    model's (``assign``), so the random ones are freed without a copy; ``copy=False`` lets the
    model use the given tensors themselves where no conversion is needed (a throwaway dict)."""
    current = model.state_dict(keep_vars=True)
    # Stored copies of the non-persistent causal masks (TorchScript archives hold them): skip.
    transient = {name for name, _ in model.named_buffers(remove_duplicate=False)} - current.keys()
    converted = {}
    for key, value in state_dict.items():
        if key in transient:
            continue
        target = current.get(key)
        if target is None or not isinstance(value, torch.Tensor):
            converted[key] = value      # the strict load below names it
            continue
        dtype = torch.float16 if key in half else target.dtype
        tensor = value.to(device="cpu", dtype=dtype)
        if copy and tensor is value:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        converted[key] = tensor.contiguous()
    model.load_state_dict(converted, strict=True, assign=True)


def _build(state_dict: Mapping[str, torch.Tensor], precision: str = "fp16",
           copy: bool = True) -> CLIP:
    """``build_model`` (see there); ``copy=False`` may reuse the tensors of ``state_dict``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp16' or 'fp32', got {precision!r}")
    state_dict = {k: v for k, v in state_dict.items() if k not in _NON_PARAMETER_KEYS}
    config = config_from_state_dict(state_dict)
    model = _construct(config)
    # fp16: the tensors OpenAI's convert_weights converts are rounded straight from the state
    # dict (as OpenAI's load into fp16 parameters rounds them), the others stay fp32.
    half = half_tensor_names(model) if precision == "fp16" else frozenset()
    _assign_weights(model, state_dict, copy, half)
    return model.eval()


def build_model(state_dict: Mapping[str, torch.Tensor], design_details: Mapping | None = None, *,
                precision: str = "fp16") -> CLIP:
    """Build a ``CLIP`` whose architecture is inferred from ``state_dict`` and load it (strict),
    as OpenAI's ``build_model`` does.

    * **Random numbers.** The model is first constructed with OpenAI's random initialization, in
      OpenAI's order, and only then overwritten by the weights, so the global torch generator
      advances exactly as with OpenAI's ``build_model`` (a seeded run draws the same numbers
      afterwards as an upstream run).
    * **Precision.** ``precision="fp16"`` (the default, OpenAI's result): Conv/Linear/attention
      weights and the two projections fp16, everything else fp32 (``convert_weights``).
      ``precision="fp32"``: every weight fp32, holding exactly the values of ``state_dict``.
    * The non-parameter entries of OpenAI's archives (``input_resolution``, ``context_length``,
      ``vocab_size``) and stored copies of the causal masks are ignored; the result is in eval
      mode, on CPU, and shares no memory with ``state_dict``.

    ``design_details`` is the second argument of the MaPLe/PromptSRC repositories' modified
    ``build_model``; this is OpenAI's CLIP, so passing it is an error that says what to use.
    """
    if design_details is not None:
        raise TypeError(
            "build_model() got design_details: that argument belongs to the modified CLIP of the "
            "MaPLe/PromptSRC repositories, whose prompt layers this OpenAI-compatible clip/ does not "
            "have. Use this project's IVLP, MaPLe and PromptSRC trainers (same names and config "
            "keys), and tools/import_upstream_checkpoint.py for checkpoints trained upstream")
    return _build(state_dict, precision, copy=True)


def build_model_from_config(name_or_config: str | Mapping, **overrides) -> CLIP:
    """A randomly initialised fp32 ``CLIP`` from a ``MODEL_CONFIGS`` name or a config dict.

    ``overrides`` replace single arguments, e.g.
    ``build_model_from_config("ViT-B/16", transformer_layers=2, vision_layers=2)``.
    """
    if isinstance(name_or_config, str):
        if name_or_config not in MODEL_CONFIGS:
            raise KeyError(f"unknown CLIP config {name_or_config!r}; "
                           f"available: {', '.join(MODEL_CONFIGS)}")
        config = dict(MODEL_CONFIGS[name_or_config])
    else:
        config = dict(name_or_config)
    config.update(overrides)
    return CLIP(**config)


def _restore_attention_masks(model: CLIP) -> None:
    """Give the text blocks a real causal mask (after a construction on the meta device, whose
    non-persistent mask buffers hold no data)."""
    with torch.device("cpu"):
        mask = model.build_attention_mask()
    for block in model.transformer.resblocks:
        block.attn_mask = mask


def build_model_with_config(state_dict: Mapping[str, torch.Tensor], config: Mapping, *,
                            precision: str = "fp32", random_init: bool = False,
                            copy: bool = True) -> CLIP:
    """``CLIP(**config)`` loaded (strictly) with ``state_dict``, for architectures that the
    parameter shapes alone do not determine (heads, activation: see ``CLIP``).

    Unlike ``build_model``, the model is constructed on the meta device by default: no random
    initialization is drawn (the global generator is left alone) and no second copy of the weights
    is ever allocated, which matters for multi-billion-parameter towers. ``random_init=True``
    constructs it on the CPU with OpenAI's initialization first, as ``build_model`` does.
    ``precision``: ``"fp32"`` (exact values) or ``"fp16"`` (OpenAI's mixed layout, as
    ``convert_weights``). ``copy=False`` lets the model keep the tensors of ``state_dict`` where
    no conversion is needed (a throwaway dict). The result is in eval mode, on the CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp16' or 'fp32', got {precision!r}")
    state_dict = {k: v for k, v in state_dict.items() if k not in _NON_PARAMETER_KEYS}
    if random_init:
        model = _construct(config)
    else:
        with torch.device("meta"):
            model = CLIP(**config)
    half = half_tensor_names(model) if precision == "fp16" else frozenset()
    _assign_weights(model, state_dict, copy, half)
    _restore_attention_masks(model)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"tensors without values after loading: {left[:5]}")
    return model.eval()
