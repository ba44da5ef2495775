"""Image transforms: ``build_transform`` and the custom ops it uses."""
from .transforms import (
    AVAI_CHOICES,
    INTERPOLATION_MODES,
    Cutout,
    GaussianNoise,
    InstanceNormalization,
    Random2DTranslation,
    build_transform,
)
