"""Counts in words: `1 image`, `2 images`."""


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`count noun`, the noun in the plural (`nouns`, else noun + "s") unless count is 1."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
