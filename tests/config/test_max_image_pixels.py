"""`data.max_image_pixels`: a positive whole number of pixels, or None for no limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlic import ConfigError, load_config

TINY = Path(__file__).parents[1] / "fixtures" / "configs" / "tiny.py"


def test_the_default_limit_is_100_megapixels():
    assert load_config(TINY).data.max_image_pixels == 100_000_000


@pytest.mark.parametrize("value, expected", [("None", None), ("400_000_000", 400_000_000)])
def test_the_limit_can_be_raised_or_turned_off_from_the_command_line(value, expected):
    assert load_config(TINY, [f"data.max_image_pixels={value}"]).data.max_image_pixels == expected


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_limit_below_one_pixel_is_one_sentence(value):
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [f"data.max_image_pixels={value}"])
    assert (
        f"field 'data.max_image_pixels' must be a positive number of pixels, or None for no limit, got {value}"
        in str(info.value)
    )


def test_a_limit_that_is_not_a_whole_number_is_one_sentence():
    with pytest.raises(ConfigError) as info:
        load_config(TINY, ["data.max_image_pixels=1e8"])
    assert "field 'data.max_image_pixels' must be int or None, got 100000000.0 (float)" in str(info.value)
