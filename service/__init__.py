"""Recommendation and semantic-search service: schema, encoders, artifacts, index store, ranking.

Importing this package is cheap: it only installs the torchvision import hook (see
``service._compat``) so every entry point that later imports open_clip, transformers or
torchvision works on CPU-only torch.
"""

from service import _compat

_compat.install()

__version__ = "0.1.0"
