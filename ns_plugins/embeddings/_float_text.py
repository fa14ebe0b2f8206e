"""Compiled kernels that write float32 values as numpy prints them (gensim's text vectors files).

Used by ``word2vec_format.save_word2vec`` for large arrays; imported on first use (numba). The
functions are at module level so that numba's on-disk cache keeps them between processes.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# Digits of float32 values ------------------------------------------------------------------------
# numpy prints a float32 (repr, as gensim writes it) with Dragon4 in its "unique" mode: the fewest
# digits that lie within half a gap of the neighbouring float32 values (the ends included when the
# binary mantissa is even), and of those the closest to the value (a tie to the even digit). That
# is the decimal the Schubfach algorithm finds (R. Giulietti, "The Schubfach way to render
# doubles", 2020; its float32 form as in A. Bolz's "Drachennest"), in integer arithmetic only: the
# value and its interval's ends, times 4 and a power of two, are multiplied by 10**-k rounded up to
# 64 bits, the products kept to 32 bits rounded to odd, exact enough to decide every float32 (the
# kernel was checked against the float64 kernel it replaces, numpy for that one's undecided
# values, on all 2**31 positive float32 values: no difference).
_ZERO, _NAN, _INF, _STRIP = 1, 2, 3, 4
_K_MIN, _K_MAX = -31, 45  # the powers of ten a float32 needs


def _g(k: int) -> int:
    """10**k scaled by a power of two into [2**63, 2**64), rounded up."""
    r = math.floor(math.log2(10) * k) - 63  # the floor of log2(10**k), corrected below
    while Fraction(10) ** k < Fraction(2) ** (r + 63):
        r -= 1
    while Fraction(10) ** k >= Fraction(2) ** (r + 64):
        r += 1
    return math.ceil(Fraction(10) ** k / Fraction(2) ** r)


_G = [_g(k) for k in range(_K_MIN, _K_MAX + 1)]
g_high = np.array([g >> 32 for g in _G], dtype=np.int64)  # 32-bit halves: products fit int64
g_low = np.array([g & 0xFFFFFFFF for g in _G], dtype=np.int64)
tens = np.array([10**k for k in range(10)], dtype=np.int64)
pairs = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8)


@numba.njit(cache=True, inline="always")
def times_g(high, low, c):
    """``g * c // 2**64`` rounded to odd: its lowest bit set when bits 32 to 63 of the product
    hold more than 1 (Drachennest's float32 form); ``g`` in 32-bit halves, ``c`` below 2**31."""
    product = high * c + ((low * c) >> 32)  # the product over 2**32, cut
    return (product >> 32) | ((product & 0xFFFFFFFF) > 1)


@numba.njit(cache=True, nogil=True)
def shortest(values, digits, ndigits, exponents, kinds):
    """Per float32: the shortest digits (an integer, no zeros at the end), their count and the
    power of ten of the first one; kinds: 0, or _ZERO, _NAN, _INF."""
    bits_of = values.view(np.uint32)
    # no branches in this loop (selects only): the compiler runs it on vectors
    for i in range(values.size):
        bits = np.int64(bits_of[i])
        eb = (bits >> 23) & 0xFF
        fr = bits & 0x7FFFFF
        normal = eb != 0
        c = (fr | 0x800000) if normal else fr  # the value is c * 2**q
        q = (eb - 150) if normal else np.int64(-149)
        odd = c & 1
        # a power of two: the gap below is half the gap above
        closer = np.int64(fr == 0 and eb > 1)
        k = (q * 1262611 - 524031 * closer) >> 22  # floor(log10(2**q)), or of 3/4 of it
        h = q + ((-k * 1741647) >> 19) + 1  # 1 to 4
        j = min(max(-k - _K_MIN, 0), _K_MAX - _K_MIN)
        high, low = g_high[j], g_low[j]
        # the value and its interval's ends, times 4 (the ends are half a gap off), times 10**-k
        vbl = times_g(high, low, (4 * c - 2 + closer) << h)
        vb = times_g(high, low, (4 * c) << h)
        vbr = times_g(high, low, (4 * c + 2) << h)
        lower = vbl + odd  # the ends belong to the interval when c is even
        upper = vbr - odd
        s = vb >> 2  # the value's digits at 10**k, cut
        # one digit fewer (10**(k + 1)) when exactly one of its two candidates is inside
        sp = (s * 3435973837) >> 35  # s // 10 (s below 2**30)
        up_in = lower <= 40 * sp
        wp_in = 40 * sp + 40 <= upper
        short = s >= 10 and up_in != wp_in
        # otherwise s or s + 1: the one inside, or the closer when both are (a tie to the even)
        u_in = lower <= 4 * s
        w_in = 4 * s + 4 <= upper
        mid = 4 * s + 2
        up = (w_in and not u_in) or (u_in == w_in and (vb > mid or (vb == mid and (s & 1) == 1)))
        d = sp + wp_in if short else s + up
        e = k + 1 if short else k
        # an integer below 2**24 is its own shortest text
        shift = min(max(-q, 0), 31)
        small = normal and 0 <= -q < 24 and (c & ((np.int64(1) << shift) - 1)) == 0
        d = (c >> shift) if small else d
        e = 0 if small else e
        n = np.int64(1)
        for t in range(1, 9):
            n += d >= tens[t]
        digits[i] = d
        ndigits[i] = n
        exponents[i] = e + n - 1
        zero_end = d - ((d * 3435973837) >> 35) * 10 == 0  # stripped in the loop below
        special = _NAN if fr != 0 else _INF
        kinds[i] = special if eb == 255 else _ZERO if (eb | fr) == 0 else _STRIP if zero_end else 0
    for i in range(values.size):
        if kinds[i] == _STRIP:
            d, n = np.int64(digits[i]), np.int64(ndigits[i])
            while d % 10 == 0 and n > 1:
                d //= 10
                n -= 1
            digits[i], ndigits[i] = d, n
            kinds[i] = 0


# Text of float32 values -------------------------------------------------------------------------
_ASCII_ZEROS = 0x3030303030303030  # "00000000"


@intrinsic
def store8(typingctx, out, pos, word):
    """``out[pos:pos + 8]`` = the 8 bytes of the int64 ``word``, lowest first: one store, at any
    alignment, unchecked (``out`` needs the room)."""
    if not (isinstance(out, types.Array) and out.dtype == types.uint8 and out.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        array, at, value = args
        data = context.make_array(signature.args[0])(context, builder, array).data
        target = builder.bitcast(builder.gep(data, [at]), ir.IntType(64).as_pointer())
        builder.store(value, target).align = 1
        return context.get_dummy_value()

    return types.void(out, types.int64, types.int64), codegen


@numba.njit(cache=True, nogil=True)
def plain_texts(values, digits, ndigits, exponents, kinds, low, high, sizes):
    """The text of each value from 1e-4 to 1e9 as numpy prints it, without the sign (0.00ddd,
    dd.ddd, ddd00.0: at most 14 bytes), in 16 bytes: the first 8 in ``low`` (the first byte
    lowest), the next in ``high``; its length in ``sizes``, 0 for the other values."""
    # no branches (selects only): the compiler runs it on vectors
    for i in range(values.size):
        d = np.int64(digits[i])
        n = np.int64(ndigits[i])
        e = min(max(np.int64(exponents[i]), -4), 8)
        # the nine digits of d * 10**(9 - n) (ddd000000): the first, then eight at once, a byte
        # each (a division by 10**4 splits them in two 32-bit halves, by 100 each half in two
        # 16-bit quarters, by 10 each quarter in two bytes)
        full = d * tens[9 - n]
        first = (full * 1441151881) >> 57  # full // 10**8 (full below 2**30)
        rest = full - first * 100000000
        upper = (rest * 109951163) >> 40  # rest // 10**4 (rest below 10**8)
        x = upper | ((rest - upper * 10000) << 32)
        y = ((x * 10486) >> 20) & 0x0000007F0000007F  # each half // 100
        x = (x << 16) - y * (100 << 16) + y
        y = ((x * 103) >> 10) & 0x000F000F000F000F  # each quarter // 10
        x = (x << 8) - y * (10 << 8) + y
        lo = first | (x << 8) | _ASCII_ZEROS  # "ddddddddd0000000" over lo, hi
        hi = (x >> 56) | _ASCII_ZEROS
        # below 1: z zeros before the digits ("000ddd"), the point after the first byte
        z = max(-e, 0)
        hi = (hi << (8 * z)) | ((lo >> 1) >> (63 - 8 * z))
        lo = (lo << (8 * z)) | (_ASCII_ZEROS & ((np.int64(1) << (8 * z)) - 1))
        # the point after byte p - 1 (p = 1 to 9): the bytes from p on one place up
        p = max(e, 0) + 1
        at = 8 * min(p, 7)
        below = (np.int64(1) << at) - 1
        lo_point = (lo & below) | ((lo & ~below) << 8) | (np.int64(46) << at)
        hi_shifted = (hi << 8) | (lo >> 56)
        at = 8 * max(p - 8, 0)
        below = (np.int64(1) << at) - 1
        hi_point = (hi & below) | ((hi & ~below) << 8) | (np.int64(46) << at)
        low[i] = lo_point if p < 8 else lo
        high[i] = hi_shifted if p < 8 else hi_point
        # the digits (and zeros) and the point, and a zero after it when it ends them
        a = abs(np.float64(values[i]))
        plain = kinds[i] == 0 and exponents[i] <= 8 and a >= 1e-4
        sizes[i] = max(n + z, p + 1) + 1 if plain else 0


@numba.njit(cache=True, inline="always")
def put_digits(out, pos, d, n, dot):
    """Write the ``n`` digits of ``d``, with a point after the first ``dot`` when ``0 < dot <
    n``; the end."""
    if not 0 < dot < n:
        dot = n
    else:
        out[pos + dot] = 46
    j = n - 1  # two digits at a time: half the chain of divisions
    ud = np.uint64(d)  # unsigned: no sign corrections in % and //
    while j > 0:
        rest = ud // np.uint64(100)
        pair = 2 * (ud - rest * np.uint64(100))
        ud = rest
        out[pos + j + (j >= dot)] = pairs[pair + 1]
        out[pos + j - 1 + (j - 1 >= dot)] = pairs[pair]
        j -= 2
    if j == 0:
        out[pos] = 48 + ud
    return pos + n + (dot < n)


@numba.njit(cache=True, inline="always")
def put3(out, pos, a, b, c):
    out[pos] = a
    out[pos + 1] = b
    out[pos + 2] = c
    return pos + 3


@numba.njit(cache=True, inline="always")
def nine_digits(out, start, d, n, dot):
    """The nine digits of ``d * 10**(9 - n)`` (``d`` has ``n``: ddd000000) at ``start`` on,
    those after digit ``dot`` one place further right; fixed writes, no branches."""
    full = np.uint64(d) * np.uint64(tens[9 - n])
    first = full // np.uint64(100000000)
    rest = full - first * np.uint64(100000000)
    p1 = rest // np.uint64(1000000)
    rest -= p1 * np.uint64(1000000)
    p2 = rest // np.uint64(10000)
    rest -= p2 * np.uint64(10000)
    p3 = rest // np.uint64(100)
    p4 = rest - p3 * np.uint64(100)
    out[start] = 48 + first
    out[start + 1 + (0 >= dot)] = pairs[2 * p1]
    out[start + 2 + (1 >= dot)] = pairs[2 * p1 + 1]
    out[start + 3 + (2 >= dot)] = pairs[2 * p2]
    out[start + 4 + (3 >= dot)] = pairs[2 * p2 + 1]
    out[start + 5 + (4 >= dot)] = pairs[2 * p3]
    out[start + 6 + (5 >= dot)] = pairs[2 * p3 + 1]
    out[start + 7 + (6 >= dot)] = pairs[2 * p4]
    out[start + 8 + (7 >= dot)] = pairs[2 * p4 + 1]


# put_scientific writes a fixed number of bytes, some past the end of the text when it is
# shorter (the slot has room; the next value overwrites them): no branches


@numba.njit(cache=True, inline="always")
def put_scientific(out, pos, x, d, n, exponent):
    """``put_value`` for a value below 1e-4 or from 1e16: d.ddde-05, de+20."""
    out[pos] = 45
    pos += x < 0.0
    nine_digits(out, pos, d, n, 0)
    out[pos + 1] = 46  # the point after the first digit, overwritten by "e" when alone
    end = pos + n + (n > 1)
    out[end] = 101  # "e"
    out[end + 1] = 45 if exponent < 0 else 43
    e = abs(exponent)  # at most 45 for a float32
    out[end + 2] = 48 + e // 10
    out[end + 3] = 48 + e % 10
    return end + 4


@numba.njit(cache=True, inline="always")
def put_value(out, pos, x, d, n, exponent, kind):
    """numpy's repr of the float32 ``x`` from its digits (see ``shortest``)."""
    if kind == 0:
        a = abs(np.float64(x))
        if a < 1e-4 or a >= 1e16:
            return put_scientific(out, pos, x, d, n, exponent)
    if kind == _NAN:
        return put3(out, pos, 110, 97, 110)  # "nan"
    if x < 0.0 or (x == 0.0 and np.signbit(x)):
        out[pos] = 45  # "-"
        pos += 1
    if kind == _INF:
        return put3(out, pos, 105, 110, 102)  # "inf"
    if kind == _ZERO:
        return put3(out, pos, 48, 46, 48)  # "0.0"
    a = abs(np.float64(x))
    if 1e-4 <= a < 1e16:  # positional, at least one digit after the point
        if exponent < 0:  # 0.00ddd
            out[pos] = 48
            out[pos + 1] = 46
            pos += 2
            for _ in range(-exponent - 1):
                out[pos] = 48
                pos += 1
            return put_digits(out, pos, d, n, 0)
        if n > exponent + 1:  # dd.ddd
            return put_digits(out, pos, d, n, exponent + 1)
        pos = put_digits(out, pos, d, n, 0)  # ddd00.0
        for _ in range(exponent + 1 - n):
            out[pos] = 48
            pos += 1
        out[pos] = 46
        out[pos + 1] = 48
        return pos + 2
    pos = put_digits(out, pos, d, n, 1)  # scientific: 1.5e-07, 1e+20
    out[pos] = 101  # "e"
    out[pos + 1] = 45 if exponent < 0 else 43
    e = abs(exponent)
    if e >= 100:
        out[pos + 2] = 48 + e // 100
        pos += 1
    out[pos + 2] = 48 + (e // 10) % 10
    out[pos + 3] = 48 + e % 10
    return pos + 4


_CHUNK_VALUES = 1 << 14  # values whose digits and texts are found at a time (in the caches)


@numba.njit(cache=True, nogil=True)
def render(values, words, word_ends, row0, out):
    """Lines ``word value value ...\\n`` for the rows of ``values`` (2-D, C order), whose words
    are ``words[word_ends[row0 + i - 1]:word_ends[row0 + i]]``, into ``out``; the bytes written.
    ``out`` needs room for the words, every value at its longest, the spaces and newlines, and
    some slack: a value's writes run up to 17 bytes past its start."""
    rows, dim = values.shape
    step = max(1, _CHUNK_VALUES // max(dim, 1))  # rows at a time
    room = step * dim
    digits = np.empty(room, dtype=np.int32)
    ndigits = np.empty(room, dtype=np.int8)
    exponents = np.empty(room, dtype=np.int8)  # -45 to 38 for a float32
    kinds = np.empty(room, dtype=np.uint8)
    low = np.empty(room, dtype=np.int64)  # a value's text, 16 bytes, and its length
    high = np.empty(room, dtype=np.int64)
    sizes = np.empty(room, dtype=np.uint8)
    flat = values.reshape(-1)
    pos = 0
    for first in range(0, rows, step):
        last = min(rows, first + step)
        part = flat[first * dim : last * dim]
        n = part.size
        shortest(part, digits[:n], ndigits[:n], exponents[:n], kinds[:n])
        plain_texts(
            part, digits[:n], ndigits[:n], exponents[:n], kinds[:n], low[:n], high[:n], sizes[:n]
        )
        for i in range(first, last):
            w0 = word_ends[row0 + i - 1] if row0 + i > 0 else 0
            w1 = word_ends[row0 + i]
            out[pos : pos + w1 - w0] = words[w0:w1]
            pos += w1 - w0
            if dim == 0:  # "word \n", as gensim
                out[pos] = 32
                pos += 1
            for v in range((i - first) * dim, (i - first + 1) * dim):
                out[pos] = 32
                if sizes[v]:
                    out[pos + 1] = 45  # a "-" written always, kept when negative
                    pos += 1 + (part[v] < 0.0)
                    store8(out, pos, low[v])
                    store8(out, pos + 8, high[v])
                    pos += sizes[v]
                else:
                    pos = put_value(
                        out, pos + 1, part[v], digits[v], ndigits[v], exponents[v], kinds[v]
                    )
            out[pos] = 10
            pos += 1
    return pos
