import io

from PIL import Image

from ingest.gif import NO_CACHE_HEADERS, PIXEL


def test_pixel_is_a_valid_transparent_1x1_gif() -> None:
    image = Image.open(io.BytesIO(PIXEL))
    assert image.format == "GIF"
    assert image.size == (1, 1)
    assert image.convert("RGBA").getpixel((0, 0))[3] == 0  # type: ignore[index]


def test_pixel_headers_stop_every_cache() -> None:
    assert NO_CACHE_HEADERS["Cache-Control"] == "no-store, no-cache, must-revalidate, private"
    assert NO_CACHE_HEADERS["Pragma"] == "no-cache"
    assert NO_CACHE_HEADERS["Expires"].endswith("1970 00:00:00 GMT")
