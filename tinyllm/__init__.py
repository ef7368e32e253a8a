"""tinyllm: a GPT-style language model on the hand-written `autograd` engine.

    from tinyllm import GPT, GPTConfig
    model = GPT(GPTConfig.preset("baby", vocab_size=65))
    logits, loss = model(idx, targets)

Only the model is imported here; tokenizer, data, training and the command line are
submodules imported on use (tinyllm.tokenizer, tinyllm.train, ...).
"""
from .model import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
