"""Provider adapters. Importing this package registers every adapter with the registry.

A provider with one capability is a module (``kling.py``); once it has more than one it is a package
with one module per capability (``openai/video.py``, later ``openai/chat.py`` …)."""

from aistats_gateway.providers import local, openai  # noqa: F401
from aistats_gateway.providers import kling  # noqa: F401
from aistats_gateway.providers import luma  # noqa: F401
from aistats_gateway.providers import google  # noqa: F401
from aistats_gateway.providers import alibaba, byteplus, minimax  # noqa: F401
from aistats_gateway.providers import fal, runway, xai  # noqa: F401
