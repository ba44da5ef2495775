"""MMLoP: Multi-Modal Low-Rank Prompting (ECCV 2026), as implemented here (docs/METHOD.md).

**1. Low-rank multi-modal prompts.** CLIP stays frozen. At every layer ``l < PROMPT_DEPTH`` the
text tower gets ``n = N_CTX`` prompt rows ``P_t^l = U^l V_t^l`` (``[n, D_t]``) and the vision
tower ``P_v^l = U^l V_v^l`` (``[n, D_v]``), with rank ``r = RANK``: ``U^l [n, r]`` is shared by the
two modalities (``SHARE_U modality``; ``none`` gives each tower its own, ``modality_and_layers``
one ``U`` for all layers), ``V_t^l [r, D_t]`` and ``V_v^l [r, D_v]``. Placement is IVLP's
(``core/encoders.py``): text rows replace the ``n`` rows after the start token, vision rows are
appended after the patch tokens at layer 0 and replace the last ``n`` rows deeper. ViT-B/16 with
n 4, r 1, depth 9: 9 x (4 + 512 + 768) = 11,556 parameters (``none`` 11,592,
``modality_and_layers`` 11,524, ``FULL_RANK`` 46,080).

*Initialization.* With ``CTX_INIT`` (exactly ``N_CTX`` BPE tokens) the layer-0 text prompt starts
as the best rank-r approximation (truncated SVD) of those tokens' embeddings (full rank: the
embeddings themselves); every other prompt starts with entries of standard deviation about 0.02:
``U`` has unit mean square (``U^0 = sqrt(n) A_r`` from the SVD, random ``U ~ N(0, 1)``) and
``V ~ N(0, 0.02^2 / r)``. The two factors thus start at very different scales (a column of ``U``
has squared norm about ``n``, a row of ``V`` about ``D * 0.0004 / r``, 0.2 for ``D_t`` 512), which
makes SGD move ``U`` far slower, relative to its size, than ``V`` (docs/METHOD.md).
``BALANCED_INIT True`` rescales each rank-one term after that initialization so that the column of
``U`` and the rows of the ``V``s it multiplies (all of them, when ``U`` is shared) have equal
norms; every initial prompt ``U V`` is unchanged.

**2. Self-regulating consistency.** Prompted features are anchored to frozen zero-shot CLIP:
``L = CE + TEXT_LOSS_WEIGHT * L1(t, t_zs) + IMAGE_LOSS_WEIGHT * L1(f, f_zs)
+ KL_LOSS_WEIGHT * KL(p_zs || p)`` (``core/losses.py``), where ``t_zs`` are the frozen text
features of the 60-template ensemble (``core/anchors.py``), ``f_zs`` the frozen image features of
the same augmented batch and ``p_zs`` the zero-shot class probabilities.

**3. Uniform drift correction.** The class text features used for the logits (CE, KL and the
prediction) are ``normalize(t_c - mean_{c'}(t_c' - t_zs_c'))`` over the classes being scored
(base classes in training, the evaluated classes at test); the L1 anchor sees the uncorrected
``t``.

Config node ``TRAINER.MMLOP`` (defaults = the paper's model; every choice the paper leaves open
is a key):

====================  ==============  =====================================================
key                   default         meaning
====================  ==============  =====================================================
N_CTX                 4               prompt tokens per modality and layer
RANK                  1               rank r of ``P^l = U^l V^l``
PROMPT_DEPTH          9               prompted layers (9 base-to-novel/few-shot, 3 cross)
SHARE_U               "modality"      ``none`` / ``modality`` / ``modality_and_layers``
FULL_RANK             False           True: full-rank prompts per tower (IVLP)
CTX_INIT              "a photo of a"  layer-0 text init ('' = random); N_CTX BPE tokens
BALANCED_INIT         False           True: equal-norm factors at init, same initial prompts
TEXT_LOSS_WEIGHT      25.0            L1(prompted text, 60-template text anchors)
IMAGE_LOSS_WEIGHT     10.0            L1(prompted image, frozen image features)
KL_LOSS_WEIGHT        1.0             KL(zero-shot || prompted) logits, PromptSRC scaling
DRIFT_CORRECTION      True            uniform drift correction of the class text features
GPA                   False           Gaussian prompt aggregation over epochs
GPA_MEAN, GPA_STD     15.0, 1.0       its Gaussian over 1-based epochs
PREC                  "fp16"          ``fp32``/``fp16``/``bf16``/``amp`` (fp32 on CPU)
TRUNCATE_TEXT         True            exact speed-up: text tower up to the last EOT row
CACHE_TEXT            True            exact speed-up: text features once per evaluation
SHARED_PREFIX         True            exact speed-up: rows before the class name run once
====================  ==============  =====================================================

The rows of the paper's ablation (Table 4), and ours, are the trainer's ``ablation_rows``: each a
config of its own (``configs/trainers/MMLoP/*_abl*.yaml``, holding only the keys it switches).
The proxy demo reads them; the sweep example and docs/METHOD.md §5 show them (a test holds the
two to them). GPA
(``core/gpa.py``, shared with PromptSRC) is resumable: every checkpoint holds the accumulator
of its epoch (key ``gpa_state`` of ``prompt_learner/model.pth.tar-<e>``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY

from .core import checks
from .core.backbone import backbone_dims
from .core.context import context_parameter, text_context
from .core.gpa import GPAMixin
from .core.losses import consistency_loss, drift_correct
from .core.methods import AblationRow
from .core.model import PromptedCLIP
from .core.precision import Precision
from .core.shared_keys import SPEED_UPS, add_shared_keys, speed_ups
from .core.templates import IMAGENET_TEMPLATES_60
from .core.trainer import PromptTrainer

SHARE_U_CHOICES = ("none", "modality", "modality_and_layers")
PROMPT_STD = 0.02
LOSS_WEIGHT_KEYS = ("TEXT_LOSS_WEIGHT", "IMAGE_LOSS_WEIGHT", "KL_LOSS_WEIGHT")


def add_mmlop_keys(node: CN) -> CN:
    """The ``TRAINER.MMLOP`` keys with their defaults (see the module docstring)."""
    node.N_CTX = 4
    node.RANK = 1
    node.PROMPT_DEPTH = 9
    node.SHARE_U = "modality"
    node.FULL_RANK = False
    node.CTX_INIT = "a photo of a"
    node.BALANCED_INIT = False
    node.TEXT_LOSS_WEIGHT = 25.0
    node.IMAGE_LOSS_WEIGHT = 10.0
    node.KL_LOSS_WEIGHT = 1.0
    node.DRIFT_CORRECTION = True
    node.GPA = False
    node.GPA_MEAN = 15.0
    node.GPA_STD = 1.0
    # no PROMPT_PREC: there is no upstream MMLoP whose fp16 prompts it would reproduce
    add_shared_keys(node, ("PREC",) + SPEED_UPS)
    return node


@dataclass(frozen=True)
class MMLoPSettings:
    """The ``TRAINER.MMLOP`` keys that shape the model and the loss (see the module docstring)."""

    n_ctx: int = 4
    rank: int = 1
    prompt_depth: int = 9
    share_u: str = "modality"
    low_rank: bool = True
    ctx_init: str = "a photo of a"
    balanced_init: bool = False
    text_loss_weight: float = 25.0
    image_loss_weight: float = 10.0
    kl_loss_weight: float = 1.0
    drift_correction: bool = True
    truncate_text: bool = True
    cache_text: bool = True
    shared_prefix: bool = True

    @classmethod
    def from_cfg(cls, node) -> MMLoPSettings:
        """From the ``cfg.TRAINER.MMLOP`` node."""
        return cls(n_ctx=node.N_CTX, rank=node.RANK, prompt_depth=node.PROMPT_DEPTH,
                   share_u=node.SHARE_U, low_rank=not node.FULL_RANK, ctx_init=node.CTX_INIT,
                   balanced_init=bool(node.BALANCED_INIT),
                   text_loss_weight=float(node.TEXT_LOSS_WEIGHT),
                   image_loss_weight=float(node.IMAGE_LOSS_WEIGHT),
                   kl_loss_weight=float(node.KL_LOSS_WEIGHT),
                   drift_correction=node.DRIFT_CORRECTION, **speed_ups(node))

    @property
    def needs_anchors(self) -> bool:
        return self.drift_correction or bool(self.text_loss_weight or self.kl_loss_weight)

    @property
    def needs_zero_shot_image(self) -> bool:
        return bool(self.image_loss_weight or self.kl_loss_weight)

    def as_node(self) -> CN:
        """The ``TRAINER.MMLOP`` keys of these settings (``from_cfg`` the other way), for
        ``check_mmlop_keys``."""
        return CN({"N_CTX": self.n_ctx, "RANK": self.rank, "PROMPT_DEPTH": self.prompt_depth,
                   "SHARE_U": self.share_u, "FULL_RANK": not self.low_rank, "CTX_INIT": self.ctx_init,
                   "BALANCED_INIT": self.balanced_init, "TEXT_LOSS_WEIGHT": self.text_loss_weight,
                   "IMAGE_LOSS_WEIGHT": self.image_loss_weight, "KL_LOSS_WEIGHT": self.kl_loss_weight})

    def validate(self, text_layers: int, vision_layers: int) -> None:
        """Raise ``ValueError`` with ``check_mmlop_keys``'s message for a key that does not fit
        (a backbone of ``text_layers`` and ``vision_layers``)."""
        try:
            check_mmlop_keys(self.as_node(), "TRAINER.MMLOP", (text_layers, vision_layers),
                             "this backbone")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


def check_mmlop_keys(node, prefix: str, layers: tuple[int, int] | None, backbone: str) -> None:
    """Every rule on the ``TRAINER.MMLOP`` keys that shape the model and the loss, in one place:
    ``MMLoP.check_config`` runs it before anything is loaded (``layers`` of the configured
    backbone when known, ``config_layers``) and ``MMLoPSettings.validate`` on the loaded model's
    (as ``ValueError``, same message). Raises ``ConfigError`` naming the key, the value and what
    is allowed."""
    checks.check_range(node, prefix, "N_CTX", low=1)
    if not node.FULL_RANK:
        checks.check_range(node, prefix, "RANK", low=1, high=node.N_CTX)
    elif node.BALANCED_INIT:
        checks.fail(f"{prefix}.BALANCED_INIT", node.BALANCED_INIT,
                    f"it balances the low-rank factors; set it False with {prefix}.FULL_RANK True")
    checks.check_depth_fits(node, prefix, "PROMPT_DEPTH", "text", layers, backbone)
    checks.check_depth_fits(node, prefix, "PROMPT_DEPTH", "vision", layers, backbone)
    checks.check_choice(node, prefix, "SHARE_U", SHARE_U_CHOICES)
    checks.check_ctx_init(node, prefix, "N_CTX", exact=True)
    checks.check_loss_weights(node, prefix, LOSS_WEIGHT_KEYS)

# --- 1. Low-rank multi-modal prompts ----------------------------------------------------------


def _normal(*shape: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


def balance_factors(u: nn.Parameter, vs: Sequence[nn.Parameter]) -> None:
    """Rescale ``u [n, r]`` and the ``vs`` (each ``[r, D]``) it multiplies in place so that, for
    every rank-one term ``k``, ``|u[:, k]|`` equals the norm of the rows ``v[k]`` of all ``vs``
    together; every product ``u @ v`` is unchanged.

    Why: SGD's step on ``v`` scales with ``|u|`` and the step on ``u`` with ``|v|``, so factors of
    unequal size learn at unequal relative rates (``BALANCED_INIT``, docs/METHOD.md)."""
    with torch.no_grad():
        v_norm = torch.stack([v.pow(2).sum(dim=1) for v in vs]).sum(dim=0).sqrt()   # [r]
        u_norm = u.pow(2).sum(dim=0).sqrt()                                        # [r]
        scale = (v_norm / u_norm).sqrt()
        u.mul_(scale)
        for v in vs:
            v.div_(scale[:, None])


class MMLoPPromptLearner(nn.Module):
    """Low-rank (or full-rank) deep prompts; ``forward()`` -> ``(text_prompts, vision_prompts)``.

    ``init_embeddings``: ``[n_ctx, D_t]`` embeddings of ``CTX_INIT`` (or ``None``: random init).
    """

    def __init__(self, settings: MMLoPSettings, text_dim: int, vision_dim: int,
                 init_embeddings: torch.Tensor | None = None):
        super().__init__()
        s = settings
        self.settings = s
        n, r, depth = s.n_ctx, s.rank, s.prompt_depth
        if init_embeddings is not None and tuple(init_embeddings.shape) != (n, text_dim):
            raise ValueError(f"init_embeddings must be [{n}, {text_dim}], "
                             f"got {tuple(init_embeddings.shape)}")
        if not s.low_rank:
            text = [_normal(n, text_dim, std=PROMPT_STD) for _ in range(depth)]
            if init_embeddings is not None:
                text[0] = context_parameter(init_embeddings)
            self.ctx_text = nn.ParameterList(text)
            self.ctx_vision = nn.ParameterList(
                [_normal(n, vision_dim, std=PROMPT_STD) for _ in range(depth)])
            return
        v_std = PROMPT_STD / math.sqrt(r)
        u_text = [_normal(n, r, std=1.0) for _ in range(depth)]
        v_text = [_normal(r, text_dim, std=v_std) for _ in range(depth)]
        if init_embeddings is not None:
            a, sv, bh = torch.linalg.svd(init_embeddings.detach().float(), full_matrices=False)
            u_text[0] = nn.Parameter(a[:, :r] * math.sqrt(n))
            v_text[0] = nn.Parameter(sv[:r, None] * bh[:r] / math.sqrt(n))
        self.V_text = nn.ParameterList(v_text)
        self.V_vision = nn.ParameterList([_normal(r, vision_dim, std=v_std) for _ in range(depth)])
        if s.share_u == "modality":
            self.U = nn.ParameterList(u_text)
        elif s.share_u == "none":
            self.U_text = nn.ParameterList(u_text)
            self.U_vision = nn.ParameterList([_normal(n, r, std=1.0) for _ in range(depth)])
        else:
            self.U = u_text[0]
        if s.balanced_init:
            self._balance()

    def _balance(self) -> None:
        """``balance_factors`` over every ``U`` with the ``V``s it multiplies."""
        depth, share = self.settings.prompt_depth, self.settings.share_u
        if share == "modality_and_layers":
            balance_factors(self.U, [*self.V_text, *self.V_vision])
            return
        for i in range(depth):
            if share == "modality":
                balance_factors(self.U[i], [self.V_text[i], self.V_vision[i]])
            else:
                balance_factors(self.U_text[i], [self.V_text[i]])
                balance_factors(self.U_vision[i], [self.V_vision[i]])

    def _u(self, layer: int, tower: str) -> torch.Tensor:
        share = self.settings.share_u
        if share == "modality":
            return self.U[layer]
        if share == "none":
            return (self.U_text if tower == "text" else self.U_vision)[layer]
        return self.U

    def forward(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer prompts: text ``[n, D_t]`` and vision ``[n, D_v]``, ``PROMPT_DEPTH`` each."""
        if not self.settings.low_rank:
            return list(self.ctx_text), list(self.ctx_vision)
        depth = self.settings.prompt_depth
        text = [self._u(i, "text") @ self.V_text[i] for i in range(depth)]
        vision = [self._u(i, "vision") @ self.V_vision[i] for i in range(depth)]
        return text, vision

# --- 2 and 3. The model: consistency targets and drift-corrected logits -----------------------


@dataclass
class MMLoPOutput:
    """Training-time outputs (all fp32): logits ``[B, C]`` (drift-corrected when enabled),
    ``text [C, E]`` prompted text features before correction, ``text_anchors [C, E]``,
    ``image [B, E]``, ``image_zs [B, E]`` and ``zs_logits [B, C]`` (None when not needed)."""

    logits: torch.Tensor
    text: torch.Tensor
    text_anchors: torch.Tensor | None
    image: torch.Tensor
    image_zs: torch.Tensor | None
    zs_logits: torch.Tensor | None


class MMLoPCLIP(PromptedCLIP):
    """Frozen CLIP + ``MMLoPPromptLearner``; ``forward(images)`` returns ``MMLoPOutput`` while
    ``prompt_learner`` is in training mode (the trainer sets only the registered prompt learner's
    mode) and logits ``[B, C]`` in eval mode."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], settings: MMLoPSettings,
                 precision: Precision | None = None):
        if not hasattr(clip_model.visual, "class_embedding"):
            raise ValueError("MMLoP needs a ViT backbone (vision prompts); got a ResNet CLIP")
        dims = backbone_dims(clip_model)
        settings.validate(dims.text_layers, dims.vision_layers)
        context = text_context(clip_model, settings.ctx_init, settings.n_ctx)
        dims = backbone_dims(clip_model)
        learner = MMLoPPromptLearner(settings, text_dim=dims.text_width,
                                     vision_dim=dims.vision_width, init_embeddings=context.init)
        super().__init__(clip_model, classnames, learner, context.prefix, precision,
                         anchor_templates=IMAGENET_TEMPLATES_60 if settings.needs_anchors else None,
                         truncate_text=settings.truncate_text, cache_text=settings.cache_text,
                         shared_prefix=settings.shared_prefix)
        self.settings = settings

    def correct(self, text: torch.Tensor) -> torch.Tensor:
        """Drift-corrected text features when ``DRIFT_CORRECTION`` is on, else ``text``."""
        if self.settings.drift_correction:
            return drift_correct(text, self.text_anchors)
        return text

    def forward(self, images: torch.Tensor):
        text_prompts, vision_prompts = self.prompt_learner()
        scale = self.logit_scale
        if not self.prompt_learner.training:
            text = self.cached(lambda: self.correct(self.encode_class_texts(text_prompts)))
            return scale * self.image_features(images, vision_prompts) @ text.t()
        text = self.encode_class_texts(text_prompts)
        image = self.image_features(images, vision_prompts)
        logits = scale * image @ self.correct(text).t()
        image_zs = zs_logits = None
        if self.settings.needs_zero_shot_image:
            with torch.no_grad():
                image_zs = self.image_features(images)
                if self.settings.kl_loss_weight:
                    zs_logits = scale * image_zs @ self.text_anchors.t()
        return MMLoPOutput(logits, text, self.text_anchors, image, image_zs, zs_logits)


# --- The trainer ---------------------------------------------------------------------------

_B2N = "vit_b16_c2_ep30_batch4_4+4ctx"


@TRAINER_REGISTRY.register()
class MMLoP(GPAMixin, PromptTrainer):
    """Multi-Modal Low-Rank Prompting: the loss of section 2 on the model above."""

    description = "low-rank deep text+vision prompts with a shared factor, consistency loss, drift correction"
    config_node = "MMLOP"
    default_configs = {"base2new": _B2N,
                       "xd": "vit_b16_c2_ep30_batch4_4+4ctx_cross_datasets",
                       "few_shot": "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"}
    tiny_config = "tiny_4+4ctx_ep10"
    table_order = 60
    # The paper's ablation (Table 4), then ours; each row's switches are the keys of its config.
    ablation_rows = (
        AblationRow("IVLP (full rank, CE only)", f"{_B2N}_abl1_ivlp", proxy_label="IVLP (full rank)"),
        AblationRow("+ low rank", f"{_B2N}_abl2_lowrank", proxy_label="+ low-rank"),
        AblationRow("+ consistency", f"{_B2N}_abl3_consistency"),
        AblationRow("+ drift correction", f"{_B2N}_abl4_drift"),
        AblationRow("+ shared U (MMLoP)", _B2N),
        AblationRow("MMLoP + balanced init (ours)", f"{_B2N}_abl5_balanced",
                    proxy_label="MMLoP + balanced init"),
    )

    @classmethod
    def add_config(cls, cfg) -> None:
        cfg.TRAINER.MMLOP = add_mmlop_keys(CN())

    @classmethod
    def check_config(cls, cfg, node, prefix: str) -> None:
        super().check_config(cfg, node, prefix)
        check_mmlop_keys(node, prefix, checks.config_layers(cfg), cfg.MODEL.BACKBONE.NAME)
        checks.check_gpa(cfg, node, prefix)

    def build_model(self) -> None:
        settings = MMLoPSettings.from_cfg(self.node)
        clip_model = self.load_backbone()
        print("Building custom CLIP")
        self.model = MMLoPCLIP(clip_model, self.dm.dataset.classnames, settings, self.precision)
        self.settings = settings
        self.register_prompt_learner(self.model.prompt_learner)
        self.build_gpa(self.node, "TRAINER.MMLOP")

    def forward_backward(self, batch) -> dict:
        image, label = self.parse_batch_train(batch)
        s = self.settings
        out = self.model(image)
        loss, parts = consistency_loss(out.logits, label, out.text, out.text_anchors, out.image,
                                       out.image_zs, out.zs_logits, s.text_loss_weight,
                                       s.image_loss_weight, s.kl_loss_weight)
        return self.finish_step(loss, out.logits, label, parts)

    def model_inference(self, input):
        return self.model(input)
