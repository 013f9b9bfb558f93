// Package kern records the GPU kernels of Dynamic Mask Attention (spec: docs/dma-semantics.md)
// on a vk.Device. It knows buffers, offsets and strides,
// not the public tensor types of package dma, which composes these kernels.
//
// # The selection plan
//
// Every selection mode is represented without an Lq x Lk mask. The contract between
// the selection kernels (select_*.comp) and the attention kernel (attention*.comp):
//
// ord, uint32 [B][Hb][Lk]: the order-preserving bits of each key's float32 weight
// (Ord), or 0 for a key removed by key padding. -0 is first turned into +0 so that
// equal weights compare equal. A key's rank is kappa_j = (ord_j, j) compared
// lexicographically: a larger weight wins, and on equal weights the later key wins.
// The weight itself is recovered exactly with Unord.
//
// Blocks: key positions are cut into blocks of C = BlockSize(w) keys (a multiple of 64,
// at least w), nb = ceil(Lk / C) of them. S_b is the set of the w best valid keys of the
// prefix [0, b*C).
//
// U, uvec2 (ord, idx) [B*Hb][nb+1][ncap] with ncap = w + C, and ucount uint32
// [B*Hb][nb+1]: for b < nb, U_b lists S_b together with the valid keys of block b, sorted
// by kappa descending; entry nb lists S_final, the w best valid keys overall (mode
// shared, and mode row without causality), also sorted descending.
//
// tau, uvec2 (ord, idx) [B*Hb][Lq] (mode row, causal): the threshold of query row i at
// key position p_i = i + Lk - Lq: the w-th best valid key of [0, p_i], or (0, 0) when
// that prefix holds at most w valid keys (every valid key is kept).
//
// vcount, uint32 [B*Hb][nb+1] (in PlanBuffers.Scratch): V_b, the number of valid keys
// before block b (b = nb: all of them). Pass B needs it: from U_b alone, a row whose
// block keys so far are all padded cannot tell "exactly w valid keys" from "more".
//
// Row i keeps key j exactly when:
//
//	row, causal:        j <= p_i, ord_j > 0, kappa_j >= tau_i
//	shared (or row, not causal):  j in S_final, and j <= p_i when causal
//	none:               ord_j > 0, and j <= p_i when causal
//	explicit:           mask(b, h, i, j), ord_j > 0, and j <= p_i when causal
//
// With causality, rows with p_i < 0 keep nothing; without it every row has all valid
// keys as candidates, whatever p_i. A query tile of rows whose positions lie in one block
// b finds its kept keys among U_b: they form the prefix of U_b down to the tile's
// smallest threshold, less the keys after the tile's last position. So a tile reads
// at most w + C candidates and computes with at most w + (tile rows) keys, whatever the
// layout of the kept keys.
//
// Work and memory of the plan, per (batch, bias head), L = Lk: ord O(L) time and memory;
// U: nb sequential steps, each a sort of at most w + C <= 2w + 64 items, O(L log^2 w)
// work (bitonic) and 8 (nb+1)(w+C) <= 16 (L + 2w) + 1 KiB bytes; tau: O(w + C) per row,
// O(Lq * w) work in parallel, 8 bytes per row. Nothing is quadratic in L.
package kern
