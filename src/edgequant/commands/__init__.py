"""CLI sub-commands; each module exposes ``register(app)`` and is wired in ``edgequant.cli``."""
