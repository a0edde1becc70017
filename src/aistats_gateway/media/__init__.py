"""Media shared by the products and the providers: the local procedural renderer (``render``).

Imports no product package."""
