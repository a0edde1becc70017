"""The ``local`` provider's text models: ``local/echo`` (chat), ``local/hash-embed`` (embeddings) and
``local/keyword-moderation`` (moderations). Deterministic, free, no key, no network; registered by
``providers.inference_adapters`` like every other inference adapter."""
