"""Media shared by the products and the providers: the local procedural video renderer (``render``), the
procedural image model (``procedural``) and real audio synthesis/probing (``audio_codec``).

Imports no product package."""
