r"""Ollama Modelfiles for characters, written so that profile text can never add an instruction.

A Modelfile is a list of instructions (``FROM``, ``ADAPTER``, ``TEMPLATE``, ``SYSTEM``,
``PARAMETER name value``, ``LICENSE``). Text that comes from a profile (the system message,
the license) is always written inside a triple-quoted block, with U+034F (an invisible mark
Ollama keeps) after every quote, so no two quotes of it ever touch and the block cannot be
closed early; characters Ollama's parser drops are removed first. Breaking only runs of three
is not enough: Ollama drops what its Go Unicode tables call unprintable, and a character that
Python's newer tables keep (U+2EBF0 before Go 1.26) between quotes would vanish and re-form
the run. U+034F is in every Unicode version since 3.2, so no table drops it. Single-line values
(paths, tags, stop strings) with a newline or a quote are refused. Every rendered Modelfile is
parsed back with :func:`parse_modelfile` (Ollama's rules) and must give exactly the instructions
intended, or rendering fails.

>>> block = quote_block('bye' + '"' * 3 + '\nFROM evil')
>>> [(c.name, c.value.count("FROM")) for c in parse_modelfile("SYSTEM " + block)]
[('system', 1)]

The ``TEMPLATE`` reproduces the chat format the character was trained with (ChatML for
SmolLM2: ``<|im_start|>role\ncontent<|im_end|>\n``), and there is one ``PARAMETER stop`` per
end-of-turn token, so a fine-tune neither runs on nor leaks template text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from charlite.backends.base import CHAT_PARAMS, DEFAULT_CTX
from charlite.errors import ExportError
from charlite.gguf import read_gguf_header
from charlite.profile import Profile
from charlite.roleplay import profile_system_message

# Breaks runs of quotes inside a block. It must be a character Ollama's parser keeps: the parser
# drops every rune that is not printable (strconv.IsPrint), so a zero-width space (U+200B) would
# vanish and leave the three quotes that close the block. U+034F COMBINING GRAPHEME JOINER is a
# mark (printable to Go) and invisible.
ZWSP = "\u034f"
INSTRUCTIONS = (
    "from",
    "adapter",
    "template",
    "system",
    "parameter",
    "message",
    "license",
    "requires",
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u0085]")
_QUOTE_RUN = re.compile(r'"{3,}')

# Ollama Go template equal to SmolLM2's (ChatML) Jinja template when a system message is given.
CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    '{{ end }}<|im_start|>assistant{{ "\\n" }}'
)


@dataclass(frozen=True)
class ChatFormat:
    """How turns are wrapped: an Ollama ``TEMPLATE`` (None: Ollama derives it) and stop strings."""

    name: str
    template: str | None
    stops: tuple[str, ...]


CHATML = ChatFormat("chatml", CHATML_TEMPLATE, ("<|im_start|>", "<|im_end|>"))
# Ollama base tags whose chat format is known from their name.
TAG_FORMATS = {"smollm": CHATML, "qwen": CHATML}


def chat_format(jinja: str | None, eos: str | None = None) -> ChatFormat:
    """The chat format of a Jinja chat template (as stored in a GGUF or tokenizer config)."""
    text = jinja or ""
    if "<|im_start|>" in text and "<|im_end|>" in text:
        return CHATML
    if "<|start_header_id|>" in text:
        return ChatFormat("llama3", None, ("<|start_header_id|>", "<|eot_id|>"))
    if "<start_of_turn>" in text:
        return ChatFormat("gemma", None, ("<start_of_turn>", "<end_of_turn>"))
    return ChatFormat("unknown", None, (eos,) if eos else ())


def gguf_chat_format(path: Path) -> ChatFormat:
    """The chat format of a GGUF model, from its ``tokenizer.chat_template`` and EOS token."""
    kv = read_gguf_header(path, arrays=("tokenizer.ggml.tokens",)).kv
    jinja = kv.get("tokenizer.chat_template")
    tokens = kv.get("tokenizer.ggml.tokens") or []
    eos_id = kv.get("tokenizer.ggml.eos_token_id")
    eos = tokens[eos_id] if isinstance(eos_id, int) and 0 <= eos_id < len(tokens) else None
    return chat_format(jinja, eos)


def tag_chat_format(tag: str) -> ChatFormat | None:
    """The chat format of an Ollama base tag, when its name tells (else the base's own is kept)."""
    name = tag.split("/")[-1].lower()
    for prefix, fmt in TAG_FORMATS.items():
        if name.startswith(prefix):
            return fmt
    return None


# ---------------------------------------------------------------------------------------------
# Quoting


def clean_text(value: str) -> str:
    """Newlines normalised to ``\\n``; other control characters removed.

    Characters Ollama's parser would drop (format characters such as U+200B, lone surrogates)
    are removed too, so the text checked here is the text Ollama reads; other spaces become " ".
    """
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = _CONTROL.sub("", value)
    if not value.isprintable():
        value = "".join(_printable(c) for c in value)
    return value


def _printable(c: str) -> str:
    if c.isprintable() or c in "\n\t":
        return c
    return " " if unicodedata.category(c) == "Zs" else ""


def quote_block(value: str) -> str:
    """``value`` (text from a profile) as a triple-quoted block that nothing inside it can close
    early, whatever characters a parser drops: every quote is followed by U+034F."""
    v = clean_text(value).replace('"', '"' + ZWSP)
    if v.startswith('"'):
        v = ZWSP + v
    return f'"""{v}"""'


def quote_template(value: str) -> str:
    """charlite's own ``TEMPLATE`` (ASCII, no profile text) as a block: quotes in it are Go
    template syntax and must stay as they are, so only runs of three are broken."""
    v = _QUOTE_RUN.sub(lambda m: ZWSP.join(m.group(0)), clean_text(value))
    if v.startswith('"'):
        v = ZWSP + v
    if v.endswith('"'):
        v = v + ZWSP
    return f'"""{v}"""'


def quote_word(value: str, what: str = "value") -> str:
    """A single-line value; one with a newline, a quote or a control character is refused."""
    if not value or "\n" in value or "\r" in value or '"' in value or _CONTROL.search(value):
        raise ExportError(
            f"cannot write {what} {value!r} in a Modelfile (newline, quote or control character)"
        )
    if any(c.isspace() for c in value) or value.startswith("#"):
        return f'"{value}"'
    return value


def comment(text: str) -> str:
    """A one-line comment; quotes become apostrophes so no parser can mistake it for a block."""
    return "# " + " ".join(clean_text(text).replace('"', "'").split())


# ---------------------------------------------------------------------------------------------
# Rendering and parsing


@dataclass
class Command:
    """One Modelfile instruction as Ollama reads it (``param`` only for PARAMETER)."""

    name: str
    value: str
    param: str | None = None


@dataclass
class Modelfile:
    from_: str
    adapter: str | None = None
    template: str | None = None
    system: str | None = None
    parameters: list[tuple[str, str]] = field(default_factory=list)
    license: str | None = None
    comments: list[str] = field(default_factory=list)

    def commands(self) -> list[Command]:
        """What Ollama should read from the rendered file."""
        out = [Command("from", self.from_)]
        if self.adapter:
            out.append(Command("adapter", self.adapter))
        if self.template is not None:
            out.append(Command("template", quote_template(self.template)[3:-3]))
        if self.system is not None:
            out.append(Command("system", _escaped(self.system)))
        out.extend(Command("parameter", v, k) for k, v in self.parameters)
        if self.license and clean_text(self.license).strip():
            out.append(Command("license", _escaped(self.license)))
        return out

    def render(self) -> str:
        lines = [comment(c) for c in self.comments]
        lines.append(f"FROM {quote_word(self.from_, 'FROM')}")
        if self.adapter:
            lines.append(f"ADAPTER {quote_word(self.adapter, 'ADAPTER')}")
        if self.template is not None:
            lines.append(f"TEMPLATE {quote_template(self.template)}")
        if self.system is not None:
            lines.append(f"SYSTEM {quote_block(self.system)}")
        for key, value in self.parameters:
            if not re.fullmatch(r"[a-z_]+", key):
                raise ExportError(f"invalid Modelfile parameter name {key!r}")
            if key == "stop":
                quote_word(value, "stop string")  # refuses newlines and quotes
                shown = f'"{value}"'
            else:
                shown = quote_word(value, f"PARAMETER {key}")
            lines.append(f"PARAMETER {key} {shown}")
        if self.license and clean_text(self.license).strip():
            lines.append(f"LICENSE {quote_block(self.license)}")
        text = "\n".join(lines) + "\n"
        got = [(c.name, c.param, c.value) for c in parse_modelfile(text)]
        want = [(c.name, c.param, c.value) for c in self.commands()]
        if got != want:  # pragma: no cover - a quoting bug; never ship such a file
            raise ExportError("internal error: the Modelfile does not read back as written")
        return text


def _escaped(value: str) -> str:
    return quote_block(value)[3:-3]


def parse_modelfile(text: str) -> list[Command]:
    """Instructions of a Modelfile, read with Ollama's rules (for checks and tests).

    Lines starting with ``#`` are comments; ``\"\"\"`` opens a block that ends at the next
    ``\"\"\"``; ``"…"`` is a quoted single-line value; otherwise the value is the rest of the line.
    """
    commands: list[Command] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        eol = text.find("\n", i)
        eol = n if eol < 0 else eol
        if text[i] == "#":
            i = eol + 1
            continue
        m = re.compile(r"([A-Za-z]+)[ \t]+").match(text, i, eol)
        if not m or m.group(1).lower() not in INSTRUCTIONS:
            raise ExportError(f"Modelfile: unknown instruction in line {text[i:eol]!r}")
        name, i = m.group(1).lower(), m.end()
        param = None
        if name == "parameter":
            pm = re.compile(r"(\S+)[ \t]+").match(text, i, eol)
            if not pm:
                raise ExportError(f"Modelfile: PARAMETER without a value in line {text[i:eol]!r}")
            param, i = pm.group(1).lower(), pm.end()
        if text.startswith('"""', i):
            close = text.find('"""', i + 3)
            if close < 0:
                raise ExportError('Modelfile: unterminated """ block')
            value, i = text[i + 3 : close], close + 3
            eol = text.find("\n", i)
            eol = n if eol < 0 else eol
            if text[i:eol].strip():
                raise ExportError(f'Modelfile: text after a """ block: {text[i:eol]!r}')
        elif text.startswith('"', i):
            close = text.find('"', i + 1, eol)
            if close < 0 or text[close + 1 : eol].strip():
                raise ExportError(f"Modelfile: bad quoting in line {text[i:eol]!r}")
            value = text[i + 1 : close]
        else:
            value = text[i:eol].strip()
        if value == "":
            raise ExportError(f"Modelfile: {name.upper()} without a value")
        commands.append(Command(name, value, param))
        i = eol + 1
    return commands


# ---------------------------------------------------------------------------------------------
# Characters


def sampling_parameters() -> list[tuple[str, str]]:
    """charlite chat's own sampling defaults, so Ollama answers like ``charlite chat``."""
    p = CHAT_PARAMS
    return [
        ("temperature", f"{p.temperature:g}"),
        ("top_p", f"{p.top_p:g}"),
        ("repeat_penalty", f"{p.repeat_penalty:g}"),
        ("num_ctx", str(DEFAULT_CTX)),
        ("num_predict", str(p.max_tokens)),
    ]


def character_modelfile(
    profile: Profile,
    *,
    from_: str,
    adapter: str | None = None,
    fmt: ChatFormat | None = CHATML,
    prompted: bool = False,
    comments: list[str] | None = None,
) -> str:
    """The Modelfile text for ``profile`` over ``from_`` (a GGUF path or an Ollama tag).

    ``prompted``: the system message carries the profile's key paragraphs (no training);
    otherwise only the meta prompt and the default scene, exactly as in training.
    """
    system = profile_system_message(profile, prompted=prompted)
    params = [("stop", s) for s in (fmt.stops if fmt else ())]
    params += sampling_parameters()
    mode = "prompted: the profile is in the system message" if prompted else "trained"
    mf = Modelfile(
        from_=from_,
        adapter=adapter,
        template=fmt.template if fmt else None,
        system=system,
        parameters=params,
        license=profile.license,
        comments=comments or [f"{profile.name} ({profile.slug}), charlite Modelfile, {mode}"],
    )
    return mf.render()
