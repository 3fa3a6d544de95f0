"""A character's identity constraints (`characters.identity_constraints_json`, SPEC 5.2): what must stay the same
in every picture of it. Stored in full normalised form, like a style guide's rules."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from iat.knowledge.rules import HexColor
from iat.knowledge.templates import CODE_PATTERN

# Stable short id of a character: lowercase letters, digits, '_' and inner '-'; it names the character in shot
# lists and in template placeholders ({character.<code>.appearance}), so it never changes after creation.
CharacterCode = Annotated[str, StringConstraints(pattern=f"^{CODE_PATTERN}$"),
                          Field(description="Stable short id: a-z, 0-9, '_' and inner '-', 1..64 characters; "
                                            "immutable after creation", examples=["ana"])]


class IdentityConstraints(BaseModel):
    """What identifies a character in every image: looks, colours, clothes, and its reference pictures."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    appearance: str = Field("", max_length=2000, description="Body, face, hair: words for the prompt")
    palette: list[HexColor] = Field(default_factory=list, max_length=16,
                                    description="The character's own colours, #rrggbb (stored lowercase)")
    outfit: str = Field("", max_length=2000, description="Clothes and props: words for the prompt")
    reference_set_id: uuid.UUID | None = Field(
        None, description="A reference set of this project holding the character's reference images")

    def stored(self) -> dict:
        return self.model_dump(mode="json")
