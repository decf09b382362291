"""Chat formatting: a tokenizer's own chat template, or a named fallback.

Fallback formats (``messages`` = [{"role": "system"|"user"|"assistant", "content": str}, ...]);
none of them writes a leading BOS token, which is left to the tokenizer:

- ``chatml``:  ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message; generation prompt
  ``<|im_start|>assistant\\n``.
- ``llama2``:  ``[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {assistant} </s><s>[INST] ...``
  (the FastChat layout); a user turn already ends with ``[/INST]``, where generation starts,
  and a final assistant turn ends with `` </s>``.
- ``llama3``:  ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`` per message
  (content stripped, as Meta's template does); generation prompt
  ``<|start_header_id|>assistant<|end_header_id|>\\n\\n``.
- ``default``: system content, ``Human: {user}``, ``Assistant: {assistant}`` joined by blank
  lines; generation prompt ``\\n\\nAssistant:``.
- ``none``: the user contents joined by newlines (system and assistant messages dropped).

``add_generation_prompt`` only applies when the last message is not from the assistant.
"""

from __future__ import annotations

CHAT_TEMPLATES = ("auto", "chatml", "llama2", "llama3", "default", "none")
_ROLES = ("system", "user", "assistant")


def _validate(messages: list[dict]) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in _ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; expected one of {_ROLES}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i} content must be a string")
        if m["role"] == "system" and i != 0:
            raise ValueError("only the first message may be a system message")


def _wants_generation(messages, add_generation_prompt: bool) -> bool:
    return add_generation_prompt and messages[-1]["role"] != "assistant"


def _chatml(messages, add_generation_prompt):
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    if _wants_generation(messages, add_generation_prompt):
        out += "<|im_start|>assistant\n"
    return out


def _llama2(messages, add_generation_prompt):
    system = None
    if messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    out = ""
    first_user = True
    for m in messages:
        if m["role"] == "user":
            if out.endswith(" </s>"):
                out += "<s>"
            sys = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if first_user and system else ""
            out += f"[INST] {sys}{m['content']} [/INST]"
            first_user = False
        else:
            out += f" {m['content']} </s>"
    if not messages and system:
        out = f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n"
    return out


def _llama3(messages, add_generation_prompt):
    out = "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        for m in messages
    )
    if _wants_generation(messages, add_generation_prompt):
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return out


def _default(messages, add_generation_prompt):
    label = {"system": "", "user": "Human: ", "assistant": "Assistant: "}
    out = "\n\n".join(label[m["role"]] + m["content"] for m in messages)
    if _wants_generation(messages, add_generation_prompt):
        out += "\n\nAssistant:"
    return out


def _none(messages, add_generation_prompt):
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


_FALLBACKS = {"chatml": _chatml, "llama2": _llama2, "llama3": _llama3, "default": _default, "none": _none}


def has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def format_chat(
    messages: list[dict],
    tokenizer=None,
    template: str = "auto",
    add_generation_prompt: bool = True,
) -> str:
    """Render ``messages`` as one prompt string.

    ``template="auto"`` uses ``tokenizer.apply_chat_template(..., tokenize=False)`` when the
    tokenizer has a chat template, else ``chatml``. A named template ignores the tokenizer.
    """
    if template not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template {template!r}; valid names: {list(CHAT_TEMPLATES)}")
    _validate(messages)
    messages = [dict(role=m["role"], content=m["content"]) for m in messages]
    if template == "auto":
        if has_chat_template(tokenizer):
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        template = "chatml"
    return _FALLBACKS[template](messages, add_generation_prompt)
