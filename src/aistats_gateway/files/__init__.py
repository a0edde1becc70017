"""The Files API (``/v1/files``): uploads streamed into the blob store, owned by a workspace.

``endpoints`` (routes) → ``upload`` (multipart → blob store, with ``multipart`` and the batch
JSONL validator ``jsonl``) and ``service`` (rows, listing, deletion, the sweep run by ``jobs``);
``content`` serves the bytes. Batches use ``service.get_owned``/``open_content``/``store_stream``
and ``jsonl.validate_rows``.
"""
