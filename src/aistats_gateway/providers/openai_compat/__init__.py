"""OpenAI-compatible upstreams (OpenAI, Mistral, DeepSeek, xAI, Groq, Together, operator-defined):
one configurable adapter per capability (chat, embeddings, moderations)."""
