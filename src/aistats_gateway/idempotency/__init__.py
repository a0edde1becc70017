"""Safe retries with the ``Idempotency-Key`` request header (see ``service``)."""
