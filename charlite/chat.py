"""A chat session independent of the terminal: history, persistence, model resolution.

The rendered conversation keeps a byte-stable prefix from turn to turn (the system message is
fixed for the session and old turns are only ever dropped in large blocks), so llama.cpp
re-evaluates only the new tokens of each turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from charlite import characters, roleplay
from charlite.backends import Backend, Delta, GenParams
from charlite.backends.base import CHAT_PARAMS, LocalModel
from charlite.errors import CharliteError
from charlite.history import History
from charlite.knowledge import paragraphs_in, recall
from charlite.persona_cache import PersonaCache
from charlite.profile import Profile, Scene
from charlite.trim import trim_incomplete
from charlite.voices import resolve_model

TRIM_TARGET = 0.6  # after trimming, the history fills at most this share of its budget


class ChatSession:
    """One conversation with a character, stored turn by turn in the history database."""

    def __init__(
        self,
        profile: Profile,
        backend: Backend,
        *,
        prompted: bool = True,
        history: History | None = None,
        session_id: str | None = None,
        scene: Scene | None = None,
        params: GenParams = CHAT_PARAMS,
        user_name: str | None = None,
        model_label: str | None = None,
        use_persona_cache: bool = True,
        new_session_id: str | None = None,
        trim: bool = True,
        knowledge: bool = False,
    ):
        self.profile = profile
        self.knowledge = knowledge
        """Recall profile paragraphs into each new user turn (see :mod:`charlite.knowledge`)."""
        self.last_recall: list[str] = []
        self.backend = backend
        self.prompted = prompted
        self.history = history
        self.params = params
        self.user_name = user_name
        self.model_label = model_label or backend.describe()
        self.use_persona_cache = use_persona_cache
        self.trim = trim
        self.last_cut = False  # whether the last reply was cut by the token limit
        self.last_reply = ""  # the last reply as shown (trimmed when cut, unless trim is off)
        self.turns: list[roleplay.Turn] = []
        self._first_kept = 0
        if session_id and history:
            self._continue(history, session_id, scene)
        else:
            self.scene = scene or profile.default_scene
            self.session_id = (
                history.new_session(
                    profile.slug,
                    self.model_label,
                    self.scene.location,
                    self.scene.status,
                    sid=new_session_id,
                )
                if history
                else None
            )
        self._system = self._make_system()
        self._primed = False

    def _continue(self, history: History, session_id: str, scene: Scene | None) -> None:
        """Load the stored session ``session_id``: its turns and scene (or set ``scene``)."""
        row = history.session(session_id)
        if row.character != self.profile.slug:
            raise CharliteError(
                f"session '{session_id}' is a chat with '{row.character}', not '{self.profile.slug}'"
            )
        self.session_id = session_id
        self.scene = scene or (
            Scene(location=row.location, status=row.status)
            if row.location and row.status
            else self.profile.default_scene
        )
        name = self.profile.short_name
        for t in history.turns(session_id):
            if t.role == "assistant":
                self.turns.append(roleplay.Turn(name, t.content, "speaking"))
            else:
                self.turns.append(roleplay.Turn(t.speaker, t.content))
        if scene:
            history.set_scene(session_id, scene.location, scene.status)

    # -- prompt ---------------------------------------------------------------------------------

    def _make_system(self) -> str:
        # The same for every session of this character and scene (not tuned to the first
        # question), so its evaluated state can be cached and reused: see prime().
        return roleplay.profile_system_message(self.profile, self.scene, prompted=self.prompted)

    def prime(self) -> str | None:
        """Evaluate (or restore from the persona cache) the system prompt before the first turn."""
        if not isinstance(self.backend, LocalModel) or not self.use_persona_cache:
            return None
        return self.backend.prime(self._system, cache=PersonaCache())

    @property
    def system(self) -> str:
        return self._system

    def _message(self, turn: roleplay.Turn) -> dict[str, str]:
        if turn.role == self.profile.short_name:
            return {"role": "assistant", "content": turn.content}
        return {"role": "user", "content": roleplay.user_line(turn.role or None, turn.content)}

    def _recall(self) -> list[str]:
        """Paragraphs for the newest user turn: only that turn carries them, so earlier turns
        render as they always did and the system message never changes."""
        if not self.knowledge or not self.turns or self.turns[-1].role == self.profile.short_name:
            return []
        exclude = paragraphs_in(self.profile, self._system)
        return recall(self.profile, self.turns[-1].content, exclude=exclude)

    def messages(self) -> list[dict[str, str]]:
        """The prompt for the next reply, dropping the oldest turns in blocks when it is too long."""
        fitted = roleplay.fit_context(
            [{"role": "system", "content": self._system}, *map(self._message, self.turns)],
            count_tokens=self.backend.count_tokens,
            n_ctx=self.backend.n_ctx,
            max_tokens=self.params.max_tokens,
            recalled=self._recall(),
            first=self._first_kept,
            target=TRIM_TARGET,
        )
        self._first_kept = fitted.first
        self.last_recall = fitted.recalled
        return fitted.messages

    # -- turns ----------------------------------------------------------------------------------

    def stream(self, text: str) -> Iterator[Delta]:
        """Stream the character's reply to ``text``; the turn is stored when the reply ends.

        If the caller stops early (Ctrl-C), what was said so far is kept as the reply.
        """
        if not self.turns and not self._primed:
            self.prime()
        self._primed = True
        user = roleplay.Turn(self.user_name or "", text)
        self.turns.append(user)
        if self.history and self.session_id:
            self.history.add_turn(self.session_id, "user", self.user_name or "", text)
        pieces: list[str] = []
        reason = None
        self.last_cut = False
        self.last_reply = ""
        try:
            for delta in self.backend.stream(self.messages(), self.params):
                pieces.append(delta.text)
                reason = delta.finish_reason or reason
                yield delta
        finally:
            # What was shown is what the history keeps and the next prompt repeats: the raw
            # text, or (cut by the token limit) the text up to its last full sentence.
            reply = "".join(pieces)
            self.last_cut = reason == "length"
            if self.last_cut and self.trim:
                reply = trim_incomplete(reply)
            self.last_reply = reply
            if reply.strip():
                self.turns.append(roleplay.Turn(self.profile.short_name, reply, "speaking"))
                if self.history and self.session_id:
                    self.history.add_turn(
                        self.session_id,
                        "assistant",
                        self.profile.short_name,
                        reply,
                        cut=self.last_cut,
                    )

    def reply(self, text: str) -> str:
        """The reply to ``text`` as shown (trimmed to its last full sentence when cut)."""
        for _ in self.stream(text):
            pass
        return self.last_reply.strip()

    def spoken(self, reply: str) -> str:
        """The words said aloud, or the whole reply when it has no speaking part."""
        said = roleplay.spoken(reply, self.profile.short_name)
        return said or reply.strip()

    def set_scene(self, location: str, status: str) -> None:
        self.scene = Scene(location=location, status=status)
        self._system = self._make_system()
        self._first_kept = 0
        if self.history and self.session_id:
            self.history.set_scene(self.session_id, location, status)

    def reset(self) -> None:
        """Start a new session with the same character and scene."""
        self.turns.clear()
        self._first_kept = 0
        if self.history:
            self.session_id = self.history.new_session(
                self.profile.slug, self.model_label, self.scene.location, self.scene.status
            )
        self._system = self._make_system()


def switch_character(
    session: ChatSession, name: str, verbose: bool = False
) -> tuple[ChatSession, str]:
    """A new session with another character, reusing the loaded base where possible.

    When both characters run on the same base GGUF (prompted, or a LoRA adapter over it), only
    the adapter is swapped on the loaded model; a merged export or another model means a reload.
    Returns the new session and ``"swapped"`` or ``"reloaded"``.
    """
    profile = characters.get_profile(name)
    resolved = resolve_model(profile)
    backend = session.backend
    how = "reloaded"
    target_path = resolved.path or (
        resolved.spec.gguf_path() if resolved.spec.is_local_gguf else None
    )
    if (
        isinstance(backend, LocalModel)
        and target_path is not None
        and Path(target_path).resolve() == backend.path.resolve()
    ):
        backend.set_adapter(resolved.lora)
        how = "swapped"
    else:
        backend = resolved.backend(verbose=verbose)
    new = ChatSession(
        profile,
        backend,
        prompted=resolved.prompted,
        history=session.history,
        params=session.params,
        model_label=resolved.label,
        use_persona_cache=session.use_persona_cache,
        trim=session.trim,
        knowledge=session.knowledge,
    )
    return new, how
