"""Wire-format codecs: each module decodes and encodes one protocol to and from the IR, both as a
client-facing protocol (request in, response/stream out) and as an upstream protocol (request out,
response/stream in)."""
