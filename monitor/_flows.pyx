# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled kernel of the flow table: a batch's packets grouped by flow, with the sums.

Reference: ``monitor.flow.table._group_py`` (numpy: a hash of each canonical tuple,
``np.unique`` and ``np.bincount``), which this gives exactly; tests/test_flow_kernel.py
compares the two. One pass over the packets with an open-addressing hash table instead of
a sort and a dozen array passes. Built by setup.py like the other kernels; without it
(or with ``AVMON_PURE_PYTHON=1``) the reference runs.
"""

from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc

import numpy as np

cdef extern from *:
    """
    #ifndef AVMON_KERNELS_SHA256
    #define AVMON_KERNELS_SHA256 "unknown"
    #endif
    """
    const char *AVMON_KERNELS_SHA256

#: SHA-256 of the _flows.pyx this module was built from (a test catches a stale build).
SOURCE_SHA256 = AVMON_KERNELS_SHA256.decode("ascii")

cdef enum:
    TCP_SYN = 0x02
    TCP_ACK = 0x10


cdef inline uint64_t _mix(uint64_t h, uint64_t v) noexcept nogil:
    # The reference's splitmix64-style finaliser (monitor.flow.table._mix), bit for bit.
    cdef uint64_t x = (h ^ v) * <uint64_t>0x9E3779B97F4A7C15ULL
    x ^= x >> 31
    x *= <uint64_t>0xBF58476D1CE4E5B9ULL
    x ^= x >> 29
    x *= <uint64_t>0x94D049BB133111EBULL
    return x ^ (x >> 32)


def group(const uint64_t[::1] ah not None, const uint64_t[::1] al not None,
          const uint64_t[::1] bh not None, const uint64_t[::1] bl not None,
          const uint64_t[::1] pa not None, const uint64_t[::1] pb not None,
          const uint64_t[::1] pr not None, uint64_t depth,
          const uint8_t[::1] swap not None, const uint8_t[::1] pure_syn not None,
          const uint8_t[::1] flags not None, const int64_t[::1] wl not None,
          const int64_t[::1] ts not None, int64_t min_idle):
    """Reference: ``monitor.flow.table._group_py``. Per packet its group; per group (in
    the order of the tuple hash, as ``np.unique`` gives them) the first and last packet,
    packets, bytes and TCP flags each way, and whether packet order matters (a pure SYN
    after the first packet, or a gap longer than ``min_idle``). None when two different
    tuples share a hash in this batch (vanishingly rare; the reference handles it)."""
    cdef Py_ssize_t n = ah.shape[0]
    cdef Py_ssize_t i, g = 0, k, size = 16, slot
    cdef uint64_t mask
    cdef uint64_t h
    cdef int64_t r, gi
    cdef int d
    cdef uint64_t[::1] hv
    cdef int64_t[::1] rank, inv, first, last, prev
    cdef int64_t[:, ::1] pkts, byts, fl
    cdef uint8_t[::1] slow
    if (al.shape[0] != n or bh.shape[0] != n or bl.shape[0] != n or pa.shape[0] != n
            or pb.shape[0] != n or pr.shape[0] != n or swap.shape[0] != n
            or pure_syn.shape[0] != n or flags.shape[0] != n or wl.shape[0] != n
            or ts.shape[0] != n):
        raise ValueError("columns of different lengths")
    while size < 2 * n:
        size <<= 1
    mask = size - 1
    cdef int64_t *table = <int64_t *>malloc(size * sizeof(int64_t))
    cdef uint64_t *hashes = <uint64_t *>malloc((n + 1) * sizeof(uint64_t))
    cdef int64_t *seen_group = <int64_t *>malloc((n + 1) * sizeof(int64_t))
    cdef int64_t *first_seen = <int64_t *>malloc((n + 1) * sizeof(int64_t))
    if table == NULL or hashes == NULL or seen_group == NULL or first_seen == NULL:
        free(table); free(hashes); free(seen_group); free(first_seen)
        raise MemoryError()
    try:
        for k in range(size):
            table[k] = -1
        # Groups in order of first appearance, each packet's group, each group's hash.
        for i in range(n):
            h = _mix(_mix(_mix(_mix(_mix(ah[i], al[i]), bh[i]), bl[i]), (pa[i] << 16) | pb[i]),
                     pr[i] | (depth << 8))
            slot = <Py_ssize_t>(h & mask)
            while True:
                r = table[slot]
                if r < 0:
                    table[slot] = g
                    hashes[g] = h
                    first_seen[g] = i
                    seen_group[i] = g
                    g += 1
                    break
                if hashes[r] == h:
                    k = first_seen[r]
                    if (ah[k] != ah[i] or al[k] != al[i] or bh[k] != bh[i] or bl[k] != bl[i]
                            or pa[k] != pa[i] or pb[k] != pb[i] or pr[k] != pr[i]):
                        return None
                    seen_group[i] = r
                    break
                slot = <Py_ssize_t>((slot + 1) & mask)
        # np.unique numbers the groups in order of their hash.
        hash_view = np.empty(g, dtype=np.uint64)
        hv = hash_view
        for k in range(g):
            hv[k] = hashes[k]
        rank_of = np.empty(g, dtype=np.int64)
        rank_of[np.argsort(hash_view, kind="stable")] = np.arange(g, dtype=np.int64)
        rank = rank_of

        inv_a = np.empty(n, dtype=np.int64)
        first_a = np.empty(g, dtype=np.int64)
        last_a = np.empty(g, dtype=np.int64)
        pkts_a = np.zeros((g, 2), dtype=np.int64)
        byts_a = np.zeros((g, 2), dtype=np.int64)
        fl_a = np.zeros((g, 2), dtype=np.int64)
        slow_a = np.zeros(g, dtype=np.bool_)
        prev_a = np.empty(g, dtype=np.int64)
        inv, first, last, prev = inv_a, first_a, last_a, prev_a
        pkts, byts, fl = pkts_a, byts_a, fl_a
        slow = slow_a.view(np.uint8)
        for k in range(g):
            first[rank[k]] = first_seen[k]
        for i in range(n):
            gi = rank[seen_group[i]]
            inv[i] = gi
            d = 1 if swap[i] else 0
            pkts[gi, d] += 1
            byts[gi, d] += wl[i]
            fl[gi, d] |= flags[i]
            last[gi] = i
            if i != first[gi]:
                if pure_syn[i]:
                    slow[gi] = 1
                # Wrapping like numpy's int64 difference (the reference).
                if <int64_t>(<uint64_t>ts[i] - <uint64_t>prev[gi]) > min_idle:
                    slow[gi] = 1
            prev[gi] = ts[i]
        return inv_a, first_a, last_a, pkts_a, byts_a, fl_a, slow_a
    finally:
        free(table)
        free(hashes)
        free(seen_group)
        free(first_seen)
