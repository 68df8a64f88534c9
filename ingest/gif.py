"""The 1x1 transparent GIF that the pixel answers, and the headers that stop every cache."""

from __future__ import annotations

import base64
from typing import Final

PIXEL: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

# A cached pixel is a lost sale: a refreshed confirmation page must reach us again.
NO_CACHE_HEADERS: Final = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-store, no-cache, must-revalidate, private",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
}
