"""A profile's sentences told by its character, in the first person (charlite.first_person)."""

from __future__ import annotations

from pathlib import Path

import pytest

from charlite import characters
from charlite.first_person import character_names, first_person
from charlite.profile import parse_markdown


@pytest.mark.parametrize(
    ("sentence", "pronoun", "expected"),
    [
        (
            "Beethoven left Bonn in 1792 with his brother.",
            "he",
            "I left Bonn in 1792 with my brother.",
        ),
        ("The Elector offered Beethoven a post.", "he", "The Elector offered me a post."),
        (
            "His father, Johann van Beethoven, was a tenor.",
            "he",
            "My father, Johann van Beethoven, was a tenor.",
        ),
        ("Napoleon, whom Beethoven admired, fell.", "he", "Napoleon, whom I admired, fell."),
        ("Beethoven's deafness grew.", "he", "My deafness grew."),
        ("Ron mocked her after she spoke.", "she", "Ron mocked me after I spoke."),
        ("She loved her cat.", "she", "I loved my cat."),
    ],
)
def test_first_person(sentence, pronoun, expected):
    names = ["Ludwig van Beethoven", "Beethoven", "Ludwig"] if pronoun == "he" else ["Hermione"]
    assert first_person(sentence, names, pronoun) == expected


def test_a_bundled_profile_is_told_in_the_first_person():
    tell = character_names(characters.get_profile("beethoven")).tell
    assert tell("Beethoven left Bonn in 1792 with his brother.") == (
        "I left Bonn in 1792 with my brother."
    )


def test_a_profile_written_in_the_first_person_is_left_as_it_is():
    profile = parse_markdown(
        "---\nname: Ada Byron\nknowledge_cutoff: 1852\nera: 1815-1852\n---\n"
        "I was born in London in 1815. My father left when I was a baby, and he never came "
        "back. I worked with Mr Babbage on his engine, and I wrote the notes that made my name.\n",
        Path("ada.md"),
    )
    sentence = "My father left when I was a baby, and he never came back."
    assert character_names(profile).told_in_first_person
    assert character_names(profile).tell(sentence) == sentence
