"""Shared text-model vocabulary: the internal representation (``ir``) and the wire codecs of the
client protocols (``codecs``: OpenAI Chat Completions, OpenAI Responses, Anthropic Messages).

A shared package: the ``inference`` product and the provider adapters both build on it, and it
imports no product package.
"""
