"""The teacher's prompts: one place, one version.

Each function returns chat messages for one teacher call. The reply is constrained to the JSON
schema of the matching model in :mod:`charlite.experience.schemas`, so the prompts describe the
content, not the syntax. Change :data:`PROMPT_VERSION` whenever a prompt's wording changes:
it is recorded in every dataset's manifest.

>>> from charlite.profile import Profile, Paragraph
>>> p = Profile(name="Ada Lovelace", slug="ada", era="1815-1852", knowledge_cutoff=1852,
...             paragraphs=[Paragraph(text="Ada was born in London in 1815.")])
>>> msgs = scene_messages(p, 0, 0, 2)
>>> [m["role"] for m in msgs]
['system', 'user']
>>> "born in London" in msgs[1]["content"]
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charlite.experience.schemas import MAX_TURNS, MIN_TURNS, SCENE_TYPES

if TYPE_CHECKING:
    from charlite.experience.schemas import SceneRecord
    from charlite.profile import Profile

PROMPT_VERSION = "charlite-er-1"

# The kinds of things a character may be asked about that lie beyond its world; the teacher
# picks the actual topic from the character's era.
UNKNOWN_KINDS: tuple[str, ...] = (
    "an invention or machine",
    "a historical event",
    "a famous person",
    "a scientific discovery",
    "a country, city or place as it is today",
    "a book, song, film or other work",
)
FICTION_KINDS: tuple[str, ...] = (
    "a technology of the real world",
    "an event of the real world",
    "a real famous person",
    "a real scientific idea",
    "a real place",
    "a real work of art",
)


def _character(profile: Profile) -> str:
    era = f" ({profile.era})" if profile.era and profile.era != "unknown" else ""
    return f"{profile.name}{era}"


def _system(profile: Profile) -> dict[str, str]:
    return {
        "role": "system",
        "content": (
            f"You are a playwright reconstructing the life of {_character(profile)} "
            "for a play. You write vivid, concrete scenes and dialogues that are true to the "
            "character's life. You answer only with JSON."
        ),
    }


def scene_type_hint(index: int) -> str:
    """Scene ``index`` of a paragraph is suggested a different type than its neighbours."""
    return SCENE_TYPES[index % len(SCENE_TYPES)]


def scene_messages(
    profile: Profile, paragraph_id: int, index: int, count: int
) -> list[dict[str, str]]:
    """Messages asking for scene ``index`` (of ``count``) drawn from one profile paragraph."""
    text = profile.paragraphs[paragraph_id].text
    who = profile.short_name
    return [
        _system(profile),
        {
            "role": "user",
            "content": (
                f"Here is a paragraph about {profile.name}:\n\n{text}\n\n"
                f"Imagine scene {index + 1} of {count} taken from this paragraph: a moment in "
                f"which {who} takes part, for example a {scene_type_hint(index)}.\n"
                "Give:\n"
                "- type: what kind of scene it is;\n"
                "- location: the place and the time, in a few words;\n"
                f"- background: one or two sentences saying who is there with {who} and what is "
                "at stake;\n"
                f"- people: the names of the one to three other people with {who}."
            ),
        },
    ]


def _style(profile: Profile) -> str:
    if profile.speaking_style:
        return f"{profile.short_name} speaks like this: {profile.speaking_style.strip()}\n"
    return ""


def _dialogue_rules(profile: Profile, others: list[str]) -> str:
    who = profile.short_name
    names = ", ".join(f'"{o}"' for o in others) if others else "their own names"
    return (
        f"The dialogue has {MIN_TURNS} to {MAX_TURNS} turns. Each turn has a role (who talks: "
        f'"{who}" or {names}), an action and a content. The action is "speaking" for words '
        f'said aloud and "thinking" for {who}\'s private thoughts. Only {who} thinks; the others '
        f"only speak. {who} both thinks and speaks at least once. Keep each line short."
    )


VISITORS: tuple[str, ...] = ("Stranger", "Traveller", "Young man", "Young woman", "Visitor")


def visitor(index: int) -> str:
    """The speaker label of the person who presses the character in protective ``index``."""
    return VISITORS[index % len(VISITORS)]


def experience_messages(
    profile: Profile, scene: SceneRecord, others: list[str]
) -> list[dict[str, str]]:
    """Messages asking for the dialogue of one scene between the character and ``others``."""
    who = profile.short_name
    paragraph = ""
    if scene.paragraph_id is not None and 0 <= scene.paragraph_id < len(profile.paragraphs):
        paragraph = f"What happened:\n{profile.paragraphs[scene.paragraph_id].text}\n\n"
    return [
        _system(profile),
        {
            "role": "user",
            "content": (
                f"{paragraph}The scene ({scene.type}):\nLocation: {scene.location}\n"
                f"Background: {scene.background}\n\n"
                f"Write this scene as it happens. First a background: a short paragraph that "
                f"sets the situation from {who}'s point of view. Then the dialogue.\n"
                f"{_style(profile)}{_dialogue_rules(profile, others)}"
            ),
        },
    ]


def coverage_messages(
    profile: Profile, question: str, answer: str, paragraph_id: int, other: str
) -> list[dict[str, str]]:
    """Messages asking for a dialogue in which ``other`` asks a fact probe's ``question`` and the
    character answers it from the profile (the coverage stage)."""
    who = profile.short_name
    scene = profile.default_scene
    return [
        _system(profile),
        {
            "role": "user",
            "content": (
                f"What happened:\n{profile.paragraphs[paragraph_id].text}\n\n"
                f"The scene (chat):\nLocation: {scene.location}\nBackground: {scene.status}\n\n"
                f'{other} asks {who}: "{question}" {who} answers from memory, truly, as the '
                f"paragraph says ({answer}), and says the names plainly.\n"
                f"Give a background: a short paragraph that sets the situation from {who}'s point "
                f"of view. Then the dialogue, which begins with {other}'s question.\n"
                f"{_style(profile)}{_dialogue_rules(profile, [other])}"
            ),
        },
    ]


def unknown_kind(profile: Profile, index: int) -> str:
    kinds = FICTION_KINDS if is_fictional(profile) else UNKNOWN_KINDS
    return kinds[index % len(kinds)]


def is_fictional(profile: Profile) -> bool:
    """A character of a story (its era names a book, film or series rather than years alone)."""
    era = (profile.era or "").lower()
    return any(w in era for w in ("book", "novel", "film", "series", "saga", "fiction", "story"))


def _beyond(profile: Profile) -> str:
    who = profile.short_name
    if is_fictional(profile):
        return f"something from outside {who}'s fictional world, which {who} has never heard of"
    if profile.knowledge_cutoff is not None:
        year = profile.knowledge_cutoff
        when = f"{-year} BC" if year < 0 else str(year)
        return f"something that appeared or happened after {when}, which {who} cannot know"
    return f"something from long after {who}'s time ({profile.era}), which {who} cannot know"


def protective_messages(profile: Profile, index: int) -> list[dict[str, str]]:
    """Messages asking for protective experience ``index``: the character meets the unknown."""
    who = profile.short_name
    traits = f" ({', '.join(profile.traits[:5])})" if profile.traits else ""
    setting = profile.default_scene
    return [
        _system(profile),
        {
            "role": "user",
            "content": (
                f"{profile.name} lived {profile.era}. Choose a topic: {unknown_kind(profile, index)}, "
                f"{_beyond(profile)}.\n"
                f"Then write a scene in {who}'s own world, for example {setting.location}: "
                f'a stranger ("{visitor(index)}") presses {who} with questions about that topic. {who} stays '
                f"completely in character{traits}: puzzled, suspicious, dismissive or angry, as "
                f"{who} would be. {who} never explains the topic and never shows any knowledge "
                "of it, and talks only of things of their own world.\n"
                f"Give the topic, the location (place and time), a background (who is there "
                f"and what is going on) and the dialogue.\n"
                f"{_style(profile)}{_dialogue_rules(profile, [visitor(index)])}"
            ),
        },
    ]
