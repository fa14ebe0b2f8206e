"""Compiled kernels that write float32 values as numpy prints them (gensim's text vectors files).

Used by ``word2vec_format.save_word2vec`` for large arrays; imported on first use (numba). The
functions are at module level so that numba's on-disk cache keeps them between processes.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Text of float32 values --------------------------------------------------------------------------
# numpy prints a float32 (repr, as gensim writes it) with Dragon4 in its "unique" mode: the first
# digit position k (of the value scaled to about 1e8..2e9) where the value cut to k digits or the
# next one up still lies within half a gap of the neighbouring float32 values (the ends included
# when the binary mantissa is even), that one chosen, or the closer one when both do (a tie goes to
# the even digit). The kernel repeats that decision in float64: exactly when the scaled value and
# its interval ends are exact (every value from about 1e-4 to 1e9), otherwise with an error bound
# (_DELTA, 20 times the rounding error of the scaling), handing a value that lies within the bound
# of a decision back to numpy (kind _UNSURE).
_LOG10_2 = 0.30102999566398120
_POW10_FROM = -40  # scale factors 10**t for t in [-40, 60] (float32 needs -30..53)
_DELTA = 1e-5
_ZERO, _NAN, _INF, _UNSURE, _SLOW, _STRIP = 1, 2, 3, 4, 5, 6


def _high_half(x: float) -> float:
    """``x`` with the low 27 bits of its mantissa cleared: an exact product with a 26-bit number."""
    bits = np.array([x]).view(np.uint64) & ~np.uint64((1 << 27) - 1)
    return float(bits.view(np.float64)[0])


pow10 = np.array([float(f"1e{t}") for t in range(_POW10_FROM, 61)])
pow10_high = np.array([_high_half(10.0**t) for t in range(23)])
units = np.array([10.0**k for k in range(13)])
inverse_units = 1.0 / units
pow2 = np.ldexp(1.0, np.arange(-150, 105))  # half a gap of the float32 values
pairs = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8)
_LO_FROM = -_POW10_FROM


@numba.njit(cache=True, inline="always")
def stop(A, LO, HI, k, exact, even):
    """(1 low | 2 high, or -1 when unsure, or 0; q, r): whether the value cut at unit 10**k
    (low) or the next multiple (high) lies within [LO, HI]."""
    u = units[k]
    q = np.floor(A * inverse_units[k])  # off by one at worst: corrected below
    r = A - q * u  # exact: both are multiples of A's last bit, below 2**31
    if r < 0.0:
        q -= 1.0
        r += u
    elif r >= u:
        q += 1.0
        r -= u
    if not exact and (r <= _DELTA or u - r <= _DELTA):
        return -1, q, r
    dl = q * u - LO
    dh = HI - (q * u + u)
    if exact:
        low = dl > 0.0 or (even and dl == 0.0)
        high = dh > 0.0 or (even and dh == 0.0)
    elif abs(dl) <= _DELTA or abs(dh) <= _DELTA:
        return -1, q, r
    else:
        low = dl > 0.0
        high = dh > 0.0
    return (1 if low else 0) + (2 if high else 0), q, r


@numba.njit(cache=True, inline="always")
def choose(k, q, r, low, high, k0, t):
    """(digits, count, power of ten of the first, rounded up) once the cut at unit 10**k is
    chosen; a round-up may leave zeros at the end (129 -> 130), ``strip`` removes them."""
    u = units[k]
    # low only: the cut; high only: the next; both: the closer, a tie to the even digit
    up = high and (not low or 2.0 * r > u or (2.0 * r == u and np.int64(q) & 1 == 1))
    d = np.int64(q) + up
    n = k0 - k + 1
    exponent = k0 - t
    if d == np.int64(units[n]):  # 99..9 rounded up
        d = 1
        n = 1
        exponent += 1
    return d, n, exponent, up


@numba.njit(cache=True, inline="always")
def strip(d, n):
    while d % 10 == 0 and n > 1:
        d //= 10
        n -= 1
    return d, n


@numba.njit(cache=True, inline="always")
def cut(A, LO, HI, k, even, exact):
    """(q, r, low, high, unsure) at unit 10**k; ``unsure`` when A, LO and HI are not exact and
    a comparison is within _DELTA of the other side."""
    u = units[k]
    q = np.float64(np.int64(A * inverse_units[k]))  # the floor (A > 0), or one off: corrected
    r = A - q * u
    q += (r >= u) - (r < 0.0)
    r = A - q * u
    f = q * u
    low = f > LO or (even and f == LO)
    high = f + u < HI or (even and f + u == HI)
    unsure = not exact and (
        min(r, u - r) <= _DELTA or abs(f - LO) <= _DELTA or abs(f + u - HI) <= _DELTA
    )
    return q, r, low, high, unsure


@numba.njit(cache=True, nogil=True)
def shortest(values, digits, ndigits, exponents, kinds):
    """Per float32: the shortest digits (an integer), their count and the power of ten of the
    first one; kinds: 0 done, or _ZERO, _NAN, _INF, _UNSURE."""
    bits_of = values.view(np.uint32)
    # the common case (a normal value below about 1e9, not a power of two: equal gaps)
    # without branches; the others, and values within _DELTA of a decision, are flagged for
    # the general loop
    for i in range(values.size):
        bits = bits_of[i]
        eb = np.int64((bits >> 23) & 0xFF)
        fr = np.int64(bits & 0x7FFFFF)
        e = eb - 150
        a = abs(np.float64(values[i]))
        gap = pow2[min(max(e + 149, 0), 254)]
        t = 8 - (np.int64((e + 23) * _LOG10_2 + 1000.0) - 1000)  # the floor
        ok = 0 < eb < 255 and fr != 0 and t >= 0
        exact = t <= 12  # a 24-bit mantissa times 5**12 and the ends: below 2**53
        p = pow10[min(max(t, _POW10_FROM), 60) + _LO_FROM]
        A = a * p
        LO = (a - gap) * p
        HI = (a + gap) * p
        even = (fr & 1) == 0
        k0 = 9 if A >= 1e9 else 8
        unsure = not exact and min(abs(A - 1e8), abs(A - 1e9)) <= _DELTA
        margin = gap * p  # in [2.9, 120): a cut at 10**ks always lies within
        ks = (margin >= 10.0) + (margin >= 100.0)
        q, r, low, high, unsure0 = cut(A, LO, HI, ks, even, exact)
        q1, r1, low1, high1, unsure1 = cut(A, LO, HI, ks + 1, even, exact)
        q2, r2, low2, high2, unsure2 = cut(A, LO, HI, ks + 2, even, exact)
        unsure = unsure or unsure0 or unsure1 or unsure2
        if (low2 or high2) and ks + 2 <= k0:
            q, r, low, high, k = q2, r2, low2, high2, ks + 2
            ok = ok and ks + 2 == k0  # it could climb further: the general loop
        elif (low1 or high1) and ks + 1 <= k0:
            q, r, low, high, k = q1, r1, low1, high1, ks + 1
        else:
            k = ks
        # too close to halfway to tell which is closer
        unsure = unsure or (not exact and abs(2.0 * r - units[k]) <= 2 * _DELTA)
        ok = ok and not unsure
        d, n, exponent, up = choose(k, q, r, low, high, k0, t)
        digits[i] = d
        ndigits[i] = n
        exponents[i] = exponent
        # no loop in this one: the compiler keeps it free of branches (3x faster)
        kinds[i] = _SLOW if not ok else _STRIP if up else 0
    for i in range(values.size):
        if kinds[i] == _STRIP:
            digits[i], ndigits[i] = strip(digits[i], ndigits[i])
            kinds[i] = 0
        if kinds[i] != _SLOW:
            continue
        bits = bits_of[i]
        eb = (bits >> 23) & 0xFF
        fr = bits & 0x7FFFFF
        if eb == 255:
            kinds[i] = _NAN if fr else _INF
            continue
        if eb == 0:
            if fr == 0:
                kinds[i] = _ZERO
                continue
            m, e, unequal = np.int64(fr), np.int64(-149), False
        else:
            m, e = np.int64(fr | 0x800000), np.int64(eb) - 150
            unequal = fr == 0 and eb > 1  # a power of two: the gap below is half the gap above
        nbits = 24
        while not (m >> (nbits - 1)):  # subnormals have fewer bits
            nbits -= 1
        a = abs(np.float64(values[i]))
        high_gap = pow2[e + 150 - 1]
        low_gap = high_gap * 0.5 if unequal else high_gap
        t = 8 - int(math.floor((e + nbits - 1) * _LOG10_2))  # a * 10**t in [1e8, 2e9)
        p = pow10[t + _LO_FROM]
        A = a * p
        LO = (a - low_gap) * p
        HI = (a + high_gap) * p
        exact = False
        if 0 <= t <= 22:  # 10**t is exact: are the three products? (split p, sum the errors)
            ph = pow10_high[t]
            pl = p - ph
            exact = (
                (a * ph - A) + a * pl == 0.0
                and ((a - low_gap) * ph - LO) + (a - low_gap) * pl == 0.0
                and ((a + high_gap) * ph - HI) + (a + high_gap) * pl == 0.0
            )
        even = (m & 1) == 0
        k0 = 9 if A >= 1e9 else 8  # the first digit's position in A (A is in [1e8, 2e9))
        if not exact and (abs(A - 1e8) <= _DELTA or abs(A - 1e9) <= _DELTA):
            kinds[i] = _UNSURE
            continue
        # positions where the cut or the next multiple lies within the interval are 0..k*;
        # cutting at a unit below the smaller half-gap always does: start there, climb
        margin = low_gap * p
        k = (margin >= 10.0) + (margin >= 100.0)
        while k < k0 and units[k + 1] <= margin:  # subnormals: fewer digits
            k += 1
        s, q, r = stop(A, LO, HI, k, exact, even)
        while s > 0 and k < k0:
            s_up, q_up, r_up = stop(A, LO, HI, k + 1, exact, even)
            if s_up == 0:
                break
            s, q, r = s_up, q_up, r_up
            k += 1
        if s <= 0:
            kinds[i] = _UNSURE
            continue
        if s == 3 and not exact and abs(2.0 * r - units[k]) <= 2 * _DELTA:
            kinds[i] = _UNSURE  # both within, and too close to halfway to tell
            continue
        d, n, exponent, up = choose(k, q, r, s & 1 == 1, s & 2 == 2, k0, t)
        digits[i], ndigits[i] = strip(d, n)
        exponents[i] = exponent
        kinds[i] = 0


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
    full = np.uint64(d) * np.uint64(units[9 - n])
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


# put_plain and put_scientific write a fixed number of bytes, some past the end of the
# text when it is shorter (the slot has room; the next value overwrites them): no branches


@numba.njit(cache=True, inline="always")
def put_plain(out, pos, x, d, n, exponent):
    """``put_value`` for a value from 1e-4 to 1e9 (exponent -4..8): 0.00ddd, dd.ddd, ddd00.0"""
    out[pos] = 45  # a "-" written always, kept when negative
    pos += x < 0.0
    out[pos] = 48  # "0.000" under what follows: the start of 0.00ddd
    out[pos + 1] = 46
    out[pos + 2] = 48
    out[pos + 3] = 48
    out[pos + 4] = 48
    small = exponent < 0
    start = pos + 1 - exponent if small else pos
    out[start + 10] = 48  # the fraction of a nine-digit integer, past the end otherwise
    # digits after the dot one place right; the zeros of ddd000000 are those of an integer
    nine_digits(out, start, d, n, 99 if small else exponent)
    out[pos + 1 if small else start + exponent + 1] = 46
    return start + n if small else start + max(n, exponent + 2) + 1


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
        if exponent <= 8 and a >= 1e-4:
            return put_plain(out, pos, x, d, n, exponent)
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


@numba.njit(cache=True, nogil=True)
def render(values, digits, ndigits, exponents, kinds, words, word_ends, row0, out):
    """Lines ``word value value ...\\n`` for the rows of ``values`` (2-D), whose words are
    ``words[word_ends[row0 + i - 1]:word_ends[row0 + i]]``, into ``out``; the bytes written.
    ``out`` needs room for the words, every value at its longest, the spaces and newlines, and
    some slack: a value's writes run up to 16 bytes past its start."""
    pos = 0
    rows, dim = values.shape
    for i in range(rows):
        w0 = word_ends[row0 + i - 1] if row0 + i > 0 else 0
        w1 = word_ends[row0 + i]
        out[pos : pos + w1 - w0] = words[w0:w1]
        pos += w1 - w0
        if dim == 0:  # "word \n", as gensim
            out[pos] = 32
            pos += 1
        for j in range(dim):
            out[pos] = 32
            v = i * dim + j
            pos = put_value(
                out, pos + 1, values[i, j], digits[v], ndigits[v], exponents[v], kinds[v]
            )
        out[pos] = 10
        pos += 1
    return pos
