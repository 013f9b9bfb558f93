#version 450
// Pack pass (internal/kern/doc.go, "Packed K and V"): gathers the K and V rows of the
// keys of every U list that the tensor-core attention kernel reads into GK and GV, each
// 16-bit [R][NP][D], NP = ncap rounded up to a multiple of 64. Region r is
//   mode row, causal:                 r = bh * nb + e, the list U_e (e < nb);
//   mode shared, or row not causal:  r = bh, the list S_final (entry nb).
// Row i < ucount of region r holds K[b, idx_i, kvh, 0..D) (GV: V), idx_i = U[list][i].y,
// b = bh / Hb, kvh = hb (Hb == Hkv) or hb / G (Hb == H); rows [ucount, NP) are zero.
// Raw 16-bit copies (storage fp16 or bf16): no conversion, so the bits are the input's.
//
// GK and GV may be split by (batch, bias head) into several buffers: one dispatch writes
// the regions of bh in [rg.bhFirst, rg.bhFirst + rg.bhCount) (push constants), region
// indices counted from bhFirst.
//
// One invocation writes one unit of a row of GK and the same unit of GV: 8 elements
// (a uvec4) in variant "vec", 2 elements (a word) in variant "word". Grid-stride loop
// over the R * NP * D / (8 or 2) units: any number of workgroups works.
//
// Variant "vec" needs D % 8 == 0 and every offset and stride of the K and V views that
// matters a multiple of 8 elements (16 bytes), so a source row is whole uvec4s. Variant
// "word" needs D even only: a row of GK/GV then starts on a word, and a source row
// starting on an odd element is read as two words per output word.
//
// variant: vec -DVEC=1
// variant: word

layout(local_size_x = 256) in;

#include "dma_common.glsl"

#ifdef VEC
#define UNIT uvec4
#define UNIT_ELEMS 8u
#else
#define UNIT uint
#define UNIT_ELEMS 2u
#endif

layout(std430, binding = 1) readonly buffer KBuf { UNIT kIn[]; };     // K, 16-bit [B, Lk, Hkv, D] via P.k*
layout(std430, binding = 2) readonly buffer VBuf { UNIT vIn[]; };     // V, likewise via P.v*
layout(std430, binding = 3) readonly buffer UBuf { uvec2 U[]; };      // [B*Hb][nb+1][ncap]
layout(std430, binding = 4) readonly buffer UCnt { uint ucount[]; };  // [B*Hb][nb+1]
layout(std430, binding = 5) writeonly buffer GKBuf { UNIT gk[]; };    // 16-bit [R][NP][D]
layout(std430, binding = 6) writeonly buffer GVBuf { UNIT gv[]; };    // likewise
layout(push_constant) uniform Range { uint bhFirst, bhCount; } rg;

#ifndef VEC
// Output word c of a source row that starts at element s (any parity).
uint loadK(uint s) {
	uint w = s >> 1;
	return (s & 1u) == 0u ? kIn[w] : ((kIn[w] >> 16) | (kIn[w + 1u] << 16));
}
uint loadV(uint s) {
	uint w = s >> 1;
	return (s & 1u) == 0u ? vIn[w] : ((vIn[w] >> 16) | (vIn[w + 1u] << 16));
}
#endif

void main() {
	const uint nb = P.nblocks, ncap = P.ncap, Hb = P.Hb, D = P.D;
	const uint NP = (ncap + 63u) & ~63u;
	const bool rowCausal = P.mode == MODE_ROW && P.causal != 0u;
	const uint R = rowCausal ? rg.bhCount * nb : rg.bhCount;  // regions of this buffer
	const uint upr = D / UNIT_ELEMS; // units per row
	const uint rows = R * NP;
	const uint n = rows * upr;       // < 2^31 (checked by the host)
	const bool kvIsHb = Hb == P.Hkv;
	const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint q = gl_GlobalInvocationID.x; q < n; q += stride) {
		uint row = q / upr, c = q - row * upr;
		uint r = row / NP, i = row - r * NP;
		uint bh, list;
		if (rowCausal) {
			bh = rg.bhFirst + r / nb;
			list = bh * (nb + 1u) + (r - (bh - rg.bhFirst) * nb);
		} else {
			bh = rg.bhFirst + r;
			list = bh * (nb + 1u) + nb;
		}
		UNIT kx = UNIT(0u), vx = UNIT(0u);
		if (i < min(ucount[list], ncap)) {
			uint idx = U[list * ncap + i].y;
			uint b = bh / Hb, hb = bh - b * Hb;
			uint kvh = kvIsHb ? hb : hb / P.G;
			uint ks = P.kOff + b * P.kSB + kvh * P.kSH + idx * P.kSL + c * UNIT_ELEMS;
			uint vs = P.vOff + b * P.vSB + kvh * P.vSH + idx * P.vSL + c * UNIT_ELEMS;
#ifdef VEC
			kx = kIn[ks >> 3];
			vx = vIn[vs >> 3];
#else
			kx = loadK(ks);
			vx = loadV(vs);
#endif
		}
		gk[q] = kx;
		gv[q] = vx;
	}
}
