"""Character Cards V1/V2/V3 in and out (SillyTavern and friends).

A card is JSON: ``{"spec": "chara_card_v3", "spec_version": "3.0", "data": {...}}`` (V2:
``chara_card_v2`` / ``2.0``), either as a ``.json`` file or base64 in a PNG ``tEXt`` chunk named
``ccv3`` (V3, preferred) or ``chara`` (V2).

* :mod:`~charlite.cards.cardfile`: card files on disk (:func:`read_card`, :func:`write_card`);
* :mod:`~charlite.cards.guards`: the checks card JSON passes before it is read (size, depth, types);
* :mod:`~charlite.cards.mapping`: card JSON <-> :class:`~charlite.profile.Profile`;
* :mod:`~charlite.cards.png`: the PNG codec (chunks, text chunks);
* :mod:`~charlite.cards.portrait`: the picture of a PNG card written without one.
"""

from charlite.cards.cardfile import (
    MAX_CARD_FILE_BYTES,
    load_card_profile,
    png_with_card,
    read_card,
    write_card,
)
from charlite.cards.guards import MAX_DEPTH, MAX_NODES
from charlite.cards.mapping import (
    DEFAULT_FIELDS,
    V2_SPEC,
    V3_SPEC,
    card_as_v2,
    card_data,
    card_from_profile,
    card_slug,
    profile_from_card,
    substitute,
)
from charlite.cards.png import (
    CARD_KEYS,
    MAX_CHUNK_BYTES,
    PNG_SIGNATURE,
    png_chunk,
    png_chunks,
    png_text,
)
from charlite.cards.portrait import portrait_png

__all__ = [
    "CARD_KEYS",
    "DEFAULT_FIELDS",
    "MAX_CARD_FILE_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "PNG_SIGNATURE",
    "V2_SPEC",
    "V3_SPEC",
    "card_as_v2",
    "card_data",
    "card_from_profile",
    "card_slug",
    "load_card_profile",
    "png_chunk",
    "png_chunks",
    "png_text",
    "png_with_card",
    "portrait_png",
    "profile_from_card",
    "read_card",
    "substitute",
    "write_card",
]
