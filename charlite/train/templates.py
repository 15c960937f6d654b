"""The fallback chat template of base models without one; it lives on the ground floor
(:mod:`charlite.chat_templates`) because llama.cpp models need it too."""

from charlite.chat_templates import CHATML, GEMMA, fallback_chat_template, fallback_for_vocab

__all__ = ["CHATML", "GEMMA", "fallback_chat_template", "fallback_for_vocab"]
