// Shared by every DMA kernel: the parameter block (binding 0, written by the host with
// vkCmdUpdateBuffer before the dispatches; Go side: internal/kern/params.go, same order)
// and the helpers for the selection plan (see internal/kern/doc.go).
// Element offsets and strides count elements of the tensor's dtype; the last dimension
// is contiguous. 16-bit tensors (fp16, bf16) are read as packed 32-bit words: element e
// is the low (e even) or high (e odd) half of word e >> 1.

layout(std430, binding = 0) readonly buffer ParamBlock {
	uint B, Lq, Lk, H, Hkv, Hb, D, G;          // G = H / Hkv
	uint mode, causal, window, blockC;         // mode: 0 row, 1 shared, 2 none, 3 explicit
	uint nblocks, ncap, keyPadding, storage;   // ncap = window + blockC; storage: of Q/K/V/O
	int posOffset;                             // Lk - Lq: row i sits at key position i + posOffset
	float scale, softcap;                      // softcap 0 = off
	uint qOff, qSB, qSL, qSH;
	uint kOff, kSB, kSL, kSH;
	uint vOff, vSB, vSL, vSH;
	uint oOff, oSB, oSL, oSH;
	uint maskOff, maskSB, maskSH, maskSI, maskSJ, maskHDiv, hasMask;  // bytes (uint8 mask)
	uint biasOff, biasSB, biasSH, biasSI, biasSJ, biasHDiv, hasBias;  // floats
	uint form, hasBdt;                         // dynamic weights: form 0 exp, 1 linear
	uint ordOff, ordSL;                        // decode kernels: ord at ordOff + bh * ordSL + j (ordSL 0: Lk)
} P;

const uint MODE_ROW = 0u, MODE_SHARED = 1u, MODE_NONE = 2u, MODE_EXPLICIT = 3u;
// P.storage (kern.Storage): float32 words, or two 16-bit elements per word.
const uint STORAGE_F32 = 0u, STORAGE_F16 = 1u, STORAGE_BF16 = 2u;

// Element e of a packed 16-bit tensor, from its word w = buf[e >> 1]: a half, or a
// bfloat16 (the high 16 bits of a float32, widened exactly).
float unpack16(uint w, uint e, bool bf16) {
	if (bf16) return uintBitsToFloat((e & 1u) != 0u ? (w & 0xffff0000u) : (w << 16));
	return unpackHalf2x16(w)[e & 1u];
}

// x rounded to bfloat16 bits (nearest, ties to even; a NaN stays a quiet NaN, as
// internal/bf16 does).
uint bf16Bits(float x) {
	uint u = floatBitsToUint(x);
	if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
	return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// Two consecutive elements (a first) as one word of a packed 16-bit tensor.
uint pack16(float a, float b, bool bf16) {
	if (bf16) return bf16Bits(a) | (bf16Bits(b) << 16);
	return packHalf2x16(vec2(a, b));
}

// Inverse of kern.Ord: the float32 weight of an ord value (ord 0, a padded key, gives
// a meaningless value that callers never use).
float unord(uint u) {
	return uintBitsToFloat((u & 0x80000000u) != 0u ? (u & 0x7fffffffu) : ~u);
}

// Where the decode kernels find ord of (batch, bias head) row bh: P.ordOff + bh * P.ordSL
// (P.ordSL 0: rows of Lk keys, the plan's layout; a KV cache's rows are its capacity apart).
uint ordRow(uint bh) { return P.ordOff + bh * (P.ordSL != 0u ? P.ordSL : P.Lk); }

// kern.Ord on float32 bits (select_ord, kv_append): -0 -> +0, every NaN -> the quiet
// NaN 0x7fc00000 (above +Inf: spec section 7); negatives flip all bits, positives set
// the sign bit; never 0. Integer operations only, so no float compare can flush a
// denormal or fold -0.
uint ordBits(uint u) {
	uint a = u & 0x7fffffffu;
	if (a == 0u) u = 0u;
	if (a > 0x7f800000u) u = 0x7fc00000u;
	return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
}

uint ordOf(float x) { return ordBits(floatBitsToUint(x)); }

// Float tests by bit pattern. Without the SignedZeroInfNanPreserve execution mode a
// Vulkan compiler may assume that no float is NaN or infinite, and the NVIDIA driver
// does: it turns l != 0.0 into an ordered compare, false for a NaN l, and a NaN row
// then reads as empty. Integer tests of the bits mean what they say on every driver.
bool isZeroF(float x) { return (floatBitsToUint(x) & 0x7fffffffu) == 0u; }
bool isNegInfF(float x) { return floatBitsToUint(x) == 0xff800000u; }
// The -1 that marks a pair that contributes nothing (P of a key the row does not keep).
bool isNoneMark(float x) { return floatBitsToUint(x) == 0xbf800000u; }

// kappa comparison: a >= b, for (ord, idx) pairs.
bool keyGE(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y >= b.y); }
