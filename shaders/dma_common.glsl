// Shared by every DMA kernel: the parameter block (binding 0, written by the host with
// vkCmdUpdateBuffer before the dispatches; Go side: internal/kern/params.go, same order)
// and the helpers for the selection plan (see internal/kern/doc.go).
// Element offsets and strides count elements of the tensor's dtype; the last dimension
// is contiguous. fp16 tensors are read as packed 32-bit words.

layout(std430, binding = 0) readonly buffer ParamBlock {
	uint B, Lq, Lk, H, Hkv, Hb, D, G;          // G = H / Hkv
	uint mode, causal, window, blockC;         // mode: 0 row, 1 shared, 2 none, 3 explicit
	uint nblocks, ncap, keyPadding, f16;       // ncap = window + blockC; f16: Q/K/V/O storage
	int posOffset;                             // Lk - Lq: row i sits at key position i + posOffset
	float scale, softcap;                      // softcap 0 = off
	uint qOff, qSB, qSL, qSH;
	uint kOff, kSB, kSL, kSH;
	uint vOff, vSB, vSL, vSH;
	uint oOff, oSB, oSL, oSH;
	uint maskOff, maskSB, maskSH, maskSI, maskSJ, maskHDiv, hasMask;  // bytes (uint8 mask)
	uint biasOff, biasSB, biasSH, biasSI, biasSJ, biasHDiv, hasBias;  // floats
	uint form, hasBdt, pad0, pad1;             // dynamic weights: form 0 exp, 1 linear
} P;

const uint MODE_ROW = 0u, MODE_SHARED = 1u, MODE_NONE = 2u, MODE_EXPLICIT = 3u;

// Inverse of kern.Ord: the float32 weight of an ord value (ord 0, a padded key, gives
// a meaningless value that callers never use).
float unord(uint u) {
	return uintBitsToFloat((u & 0x80000000u) != 0u ? (u & 0x7fffffffu) : ~u);
}

uint ordOf(float x) {
	uint u = floatBitsToUint(x == 0.0 ? 0.0 : x);
	u = (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
	return u == 0u ? 1u : u;
}

// kappa comparison: a >= b, for (ord, idx) pairs.
bool keyGE(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y >= b.y); }
