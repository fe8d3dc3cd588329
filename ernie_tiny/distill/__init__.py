"""MiniLMv2 distillation: the relation loss (``loss.py``), the config (``schema.py``) and the
recipe (``recipe.py``).

``relation_loss`` is imported lazily so that reading a config does not import Paddle
(tools set the CPU thread count before Paddle is first imported).
"""

__all__ = ["relation_loss", "relation_losses"]


def __getattr__(name):
    if name in __all__:
        from ernie_tiny.distill import loss

        return getattr(loss, name)
    raise AttributeError(name)
