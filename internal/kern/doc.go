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
// (Ord), or 0 for a key removed by key padding. -0 is first turned into +0 and every
// NaN into the quiet NaN 0x7fc00000 (above +Inf, as torch.topk ranks it: spec section
// 7) so that equal weights compare equal. A key's rank is kappa_j = (ord_j, j) compared
// lexicographically: a larger weight wins, and on equal weights the later key wins.
// The weight itself is recovered exactly with Unord (a NaN as that quiet NaN).
//
// Blocks: key positions are cut into blocks of C = BlockSize(w) keys (a multiple of 64,
// at least w), nb = ceil(Lk / C) of them. S_b is the set of the w best valid keys of the
// prefix [0, b*C).
//
// U, uvec2 (ord, idx) [B*Hb][nb+1][ncap] with ncap = w + C, and ucount uint32
// [B*Hb][nb+1]: for b < nb, U_b lists S_b together with the valid keys of block b, sorted
// by kappa descending; entry nb lists S_final, the w best valid keys overall (mode
// shared, and mode row without causality), also sorted descending. Entries of U_b past
// ucount[b] are unspecified (the plan passes use U_{b+1}[w, w + C) as scratch for block b).
//
// tau, uvec2 (ord, idx) [B*Hb][Lq] (mode row, causal): the threshold of query row i at
// key position p_i = i + Lk - Lq: the w-th best valid key of [0, p_i], or (0, 0) when
// that prefix holds at most w valid keys (every valid key is kept). Pass B (select_tau)
// derives it from the block lists; select_topw (RecordTopW) computes the same values
// from ord alone by a radix select per row, for decode steps of a few rows.
//
// vcount, uint32 [B*Hb][nb+1] (in PlanBuffers.Scratch): V_b, the number of valid keys
// before block b (b = nb: all of them). Pass B needs it: from U_b alone, a row whose
// block keys so far are all padded cannot tell "exactly w valid keys" from "more".
// After it in Scratch, bcount, uint32 [B*Hb][nb]: the number of valid keys of each block,
// passed from pass A1 to pass A2 (below).
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
// Work and memory of the plan, per (batch, bias head), L = Lk: ord O(L) time and memory.
// U is built in two passes. Pass A1 (select_sort) sorts each block's keys on its own, all
// blocks of all heads at once: O(L log^2 C) work (bitonic), depth log2(C)(log2(C)+1)/2
// barrier stages (66 for C = 2048), and leaves the valid keys of block b, sorted, in
// U_{b+1}[w, w + C) and their count in bcount. Pass A2 (select_blocks) walks the nb blocks
// of a head in order with one workgroup; step b merges S_b with the sorted block (merge
// path: one binary search per invocation, then a sequential run of ceil((w + C)/WG)
// outputs), O(w + C) work and O((w + C)/WG + log(w + C)) depth with 2 barriers (1 in the
// global-memory variant); nb (w + C) <= 2 (L + C) <= 2L + 2w + 128 work in all, nb steps
// deep. Memory: U 8 (nb+1)(w+C) <= 16 (L + 2w) + 1 KiB bytes (the sorted blocks live in
// its unused tails), scratch 4 (2 nb + 1) bytes (vcount, bcount); shared memory per
// workgroup 8C bytes (A1) and 8 (2w + C) bytes (A2), else the global-memory variants.
// Pass B (select_tau, tau): one workgroup of R = 64 invocations per chunk of R key
// positions [c, c + R), c a multiple of R (so one block b): it walks U_b from the top in
// tiles of 4R independent loads, ranking the entries with idx <= c, up to the (w+1)-th,
// and keeps those of ranks w-R+1 .. w; each row of the chunk then gets its threshold from
// them and the chunk's own keys in O(R) shared-memory steps. O(w + C) loads per chunk and
// a depth of ceil((w + C)/4R) tiles (2 barriers each), O(w + C) per row at worst,
// O(Lq (w + C)/R + Lq R) work in all; 8 bytes per row. Nothing is quadratic in L.
//
// # Packed K and V
//
// The tensor-core attention kernel reads the kept keys of a query tile as one
// contiguous, zero-padded matrix instead of gathering them itself. The pack pass
// (select_pack, RecordPack; 16-bit storage only) writes, from the plan's U and ucount,
// GK and GV, each 16-bit [R][NP][D] (raw elements of K, resp. V: no conversion),
// NP = PackRows = ncap rounded up to a multiple of 64 (always 2C, a multiple of 128, as
// w <= C), R = PackRegions regions:
//
//	row, causal:                  R = B*Hb*nb, region bh*nb + e holds U_e (e < nb)
//	shared (or row, not causal):  R = B*Hb, region bh holds S_final (entry nb)
//
// with bh = b*Hb + hb. Row i < ucount of a region holds the key idx = U[list][i].idx:
// K[b, idx, kvh, 0..D) in GK and V[b, idx, kvh, 0..D) in GV, kvh = hb when Hb = Hkv,
// hb / G when Hb = H; rows [ucount, NP) are zero, so a consumer may read whole chunks of
// up to 128 rows (attention_cm2 reads 8 to 128). Row i of a region is thus entry i of its U list: the kappa order,
// and the ord and idx of the row are U's. Modes none and explicit have no regions.
//
// A zero row times a probability is 0 only when V is finite: 0 * NaN is NaN. The check
// pass (select_vcheck, RecordVCheck) sets flags[b*Hkv + kvh], uint32 [B][Hkv], nonzero
// when V[b, 0..Lk), kvh, 0..D) holds a NaN or an infinity (any storage), so that such
// heads take a path that multiplies only the kept keys.
//
// Work and memory: both passes are copies, O(R * NP * D) for the pack (2 R NP D bytes
// each for GK and GV: in mode row, causal, about 2 (L + nb w) D bytes per (batch, bias
// head), since R NP ~ nb (w + C)) and O(B Lk Hkv D) reads for the check.
//
// # Backward
//
// RecordBackward (attention_bwd.comp, attention_bwd_kv.comp) reads the plan that
// RecordPlan makes for the forward's Params (package dma rebuilds it from the same
// weights), with O, LSE and dO. The query
// pass owns the forward's query tiles and walks the same candidates with the same
// gather, so its work is proportional to the kept pairs; it recomputes P and dS, keeps
// dQ in registers, and in the fast mode adds the tile's sums into dK, dV and dDelta
// (float32 [B][Hb][Lk]) with compare-and-swap loops. The deterministic mode leaves those
// to the key pass: one workgroup per tile of keys and kv head (keys sorted by the end of
// their rows within runs of 256 by attention_bwd_order.comp), which finds
// the rows that keep each key from the plan alone (mode row, causal: from position j up
// to the first row whose tau is above kappa_j, a binary search since tau never
// decreases; shared: the keys of S_final; none, explicit: every candidate row) and sums
// over them in row order. RecordWeightsBackward (weights_bwd.comp) carries dDelta back
// to A, Wdt, bdt and V, every sum in a fixed order.
//
// The coopmat2 backward (BwdBuffers.CM2; attention_bwd_cm2.comp, backward_cm2.go) reads
// the keys packed as for the forward (select_pack into its own GK, GV). Its row pass
// owns the forward's query tiles: Dsum, then per chunk of packed keys S = Q K^T,
// P = exp(S - lse), dP = dO V^T, dS and dQ += dS K, dQ in an accumulator. Its key pass
// owns a tile of packed rows of one region (mode row, causal: of U_e, whose rows are
// the query rows of block e; shared: S_final; none: keys of K in place) and streams the
// rows that may keep it: row i at position p keeps entry x of U_e when p is in block e,
// idx_x <= p and kappa_x >= tau_i; since tau never decreases and U_e is sorted by kappa,
// the rows of a tile start at the block (or the smallest idx) and end where tau passes
// the tile's first entry (one binary search). It accumulates dV += P^T dO,
// dK += dS^T Q and the rows of dS^T per region (PdK, PdV, PdD: float32 [R][NP][D] and
// [R][NP], linear in L as GK is). The reduce pass adds, per key, its entries over the
// regions that hold it (U_e for e from its block on while it stays in S_e; one binary
// search per region), bias heads of a group in order. With Hb = Hkv a key tile sums the
// group's query heads itself. No float atomics: results are bit-identical run to run.
// Two passes rather than one with atomic dQ (FlashAttention-2's way): package vk enables
// no float atomics, compare-and-swap loops on every dQ element of every tile would cost
// more than the recomputed S and dP (2 of the 7 products), and the result would vary
// run to run; the deterministic mode is then the fast mode too. (Not measured against
// an atomic variant.)
// Work: the forward's (row pass, plus dP and dQ) and about the kept pairs again (key
// pass); P and dS enter the products rounded to the storage type. The KHR backward
// (attention_bwd_cm.comp, backward_cm.go; fp16, modes row and shared) runs the same
// passes into the same buffers with KHR cooperative matrices, the element-wise steps
// through shared memory.
package kern
