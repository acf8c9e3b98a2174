import random

from fastdenoise.words import plural


def test_one_is_singular_every_other_count_plural():
    count = random.Random(28).randint(2, 10_000)
    assert plural(1, "image") == "1 image"
    assert plural(count, "image") == f"{count} images"
    assert plural(0, "image") == "0 images"
    assert plural(1, "batch", "batches") == "1 batch" and plural(count, "batch", "batches") == f"{count} batches"
