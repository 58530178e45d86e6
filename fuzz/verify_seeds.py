#!/usr/bin/python3
"""Writes the hand-made seeds of fuzz/fuzz_verify.c into DIR (fuzz/seeds/verify):
LMDB-layout pages (header, node pointers, nodes) of a few trees and damages."""
import struct, sys, os
out = sys.argv[1]
def page(psize, pgno, flags, nodes):
    """nodes: list of (lo, hi, nflags, key bytes, data bytes) for leaves, or child pgno for branches"""
    b = bytearray(psize)
    upper = psize
    ptrs = []
    for n in nodes:
        if isinstance(n, int):
            lo, hi, nf = n & 0xffff, (n >> 16) & 0xffff, (n >> 32) & 0xffff
            key, data = b"k", b""
        else:
            lo, hi, nf, key, data = n
        rec = struct.pack("<HHHH", lo, hi, nf, len(key)) + key + data
        upper -= len(rec) + (len(rec) & 1)
        b[upper:upper + len(rec)] = rec
        ptrs.append(upper)
    lower = 16 + 2 * len(ptrs)
    struct.pack_into("<QHHHH", b, 0, pgno, 0, flags, lower, upper)
    for i, p in enumerate(ptrs):
        struct.pack_into("<H", b, 16 + 2 * i, p)
    return bytes(b)
def seed(name, psize, roots, pages):
    shift = {64: 0, 128: 1, 256: 2, 512: 3, 1024: 4, 2048: 5, 4096: 6}[psize]
    d = bytes([shift, len(roots)]) + b"".join(struct.pack("<H", 0xffff if r is None else r) for r in roots)
    with open(os.path.join(out, name), "wb") as f:
        f.write(d + b"".join(pages))
ps = 128
meta = bytes(ps)
# one leaf tree at 2 (a value of 3 bytes), a branch at 3 with leaves 4 and 5, an overflow value in 5 -> 6..7
leaf2 = page(ps, 2, 0x02, [(3, 0, 0, b"ab", b"xyz")])
br3 = page(ps, 3, 0x01, [4, 5])
leaf4 = page(ps, 4, 0x02, [(1, 0, 0, b"a", b"1")])
leaf5 = page(ps, 5, 0x02, [(0, 0, 0x01, b"big", struct.pack("<Q", 6))])
ov6 = bytearray(ps); struct.pack_into("<QHHI", ov6, 0, 6, 0, 0x04, 2)
ov7 = bytes(ps)
seed("trees", ps, [2, 3], [meta, meta, leaf2, br3, leaf4, leaf5, bytes(ov6), ov7])
seed("notree", ps, [None, 2], [meta, meta, leaf2])
# damage: a branch naming the meta page, a page shared by two trees
seed("shared", ps, [2, 3, 4], [meta, meta, leaf2, br3, leaf4, leaf5, bytes(ov6), ov7])
br_meta = page(ps, 3, 0x01, [1])
seed("names-meta", ps, [3], [meta, meta, leaf2, br_meta])
