"""LZ-String's ``compressToEncodedURIComponent``, for ASCII text: how ClickHouse's /dashboard
page reads its state from the URL's hash (it decodes it with the JavaScript original).

A port of the original's ``_compress`` with 6 bits per output character, limited to ASCII
input (JSON with escaped non-ASCII is): every character then takes the 8-bit literal path.
"""

from __future__ import annotations

_URI_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-$"
_BITS_PER_CHAR = 6


class _Bits:
    """Bits written one at a time, 6 to an output character, as the original does."""

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.value = 0
        self.position = 0

    def put(self, bit: int) -> None:
        self.value = (self.value << 1) | bit
        if self.position == _BITS_PER_CHAR - 1:
            self.position = 0
            self.chars.append(_URI_SAFE[self.value])
            self.value = 0
        else:
            self.position += 1

    def put_number(self, value: int, width: int) -> None:
        """``width`` bits of ``value``, least significant first (the original's order)."""
        for _ in range(width):
            self.put(value & 1)
            value >>= 1

    def finish(self) -> str:
        while True:
            self.value <<= 1
            if self.position == _BITS_PER_CHAR - 1:
                self.chars.append(_URI_SAFE[self.value])
                return "".join(self.chars)
            self.position += 1


def compress_to_encoded_uri_component(text: str) -> str:
    if not text.isascii():
        raise ValueError("only ASCII text is supported: escape the rest (JSON does)")
    out = _Bits()
    dictionary: dict[str, int] = {}
    to_create: set[str] = set()
    enlarge_in, dict_size, num_bits = 2, 3, 2
    w = ""

    def emit(word: str) -> None:
        nonlocal enlarge_in, num_bits
        if word in to_create:
            out.put_number(0, num_bits)  # code 0: an 8-bit literal follows
            out.put_number(ord(word), 8)
            enlarge_in -= 1
            if enlarge_in == 0:
                enlarge_in, num_bits = 2**num_bits, num_bits + 1
            to_create.discard(word)
        else:
            out.put_number(dictionary[word], num_bits)
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in, num_bits = 2**num_bits, num_bits + 1

    for c in text:
        if c not in dictionary:
            dictionary[c] = dict_size
            dict_size += 1
            to_create.add(c)
        wc = w + c
        if wc in dictionary:
            w = wc
            continue
        emit(w)
        dictionary[wc] = dict_size
        dict_size += 1
        w = c
    if w:
        emit(w)
    out.put_number(2, num_bits)  # end of stream
    return out.finish()
