"""Anthropic Messages upstream."""
