"""Provider adapters. Importing this package registers every adapter with the registry."""

from aistats_gateway.providers import local, openai  # noqa: F401
from aistats_gateway.providers import kling  # noqa: F401
from aistats_gateway.providers import luma  # noqa: F401
from aistats_gateway.providers import google_ai_studio, google_vertex  # noqa: F401
from aistats_gateway.providers import alibaba, byteplus, minimax  # noqa: F401
from aistats_gateway.providers import fal, runway, xai  # noqa: F401
