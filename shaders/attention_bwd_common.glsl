// Shared by the two backward passes (attention_bwd.comp, query tiles; attention_bwd_kv.comp,
// key tiles): their bindings (the same list in both, so the host binds one set), the
// push constants (views of dO and of the float32 gradients), loaders and the score of
// one (row, key) pair exactly as attention.comp computes it.
// Include after dma_common.glsl and after the specialization constant DH.

layout(std430, binding = 1) readonly buffer BufQ { uint qbuf[]; };
layout(std430, binding = 2) readonly buffer BufK { uint kbuf[]; };
layout(std430, binding = 3) readonly buffer BufV { uint vbuf[]; };
layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };
layout(std430, binding = 5) readonly buffer BufU { uvec2 ub[]; };
layout(std430, binding = 6) readonly buffer BufUC { uint ucount[]; };
layout(std430, binding = 7) readonly buffer BufTau { uvec2 taub[]; };
layout(std430, binding = 8) readonly buffer BufMask { uint maskb[]; };
layout(std430, binding = 9) readonly buffer BufBias { float biasb[]; };
layout(std430, binding = 10) readonly buffer BufO { uint obuf[]; };
layout(std430, binding = 11) readonly buffer BufLSE { float lseb[]; };
layout(std430, binding = 12) readonly buffer BufDO { uint dobuf[]; };
// Gradients, float32 whatever the storage of Q/K/V. dK, dV and dDelta are uint so that
// the query pass can add into them with compare-and-swap (any device, no float atomics).
layout(std430, binding = 13) writeonly buffer BufDQ { float dqb[]; };
layout(std430, binding = 14) buffer BufDK { uint dkb[]; };
layout(std430, binding = 15) buffer BufDV { uint dvb[]; };
layout(std430, binding = 16) buffer BufDDelta { uint ddb[]; };   // [B][Hb][Lk]
layout(std430, binding = 17) buffer BufDsum { float dsumb[]; };  // [B][H][Lq], dot(dO_i, O_i)
// The key pass's order of the keys, uint32 [B][Hkv][Lk] (attention_bwd_order.comp).
layout(std430, binding = 18) buffer BufPerm { uint permb[]; };

// Views (element offset, batch, sequence and head strides) of dO (Q's storage) and of
// the float32 gradients dQ, dK, dV.
layout(push_constant) uniform Push {
	uint doOff, doSB, doSL, doSH;
	uint dqOff, dqSB, dqSL, dqSH;
	uint dkOff, dkSB, dkSL, dkSH;
	uint dvOff, dvSB, dvSL, dvSH;
} PC;

const float NEG_INF = -1.0 / 0.0;

// Whether x is neither NaN nor an infinity (a bit test: no float compare to fold away).
bool finite32(float x) { return (floatBitsToUint(x) & 0x7f800000u) != 0x7f800000u; }

bool packed16, bf16;  // P.storage, set by main
float load16or32(uint w, uint e) { return packed16 ? unpack16(w, e, bf16) : uintBitsToFloat(w); }
float loadQ(uint e) { return load16or32(qbuf[packed16 ? e >> 1 : e], e); }
float loadK(uint e) { return load16or32(kbuf[packed16 ? e >> 1 : e], e); }
float loadV(uint e) { return load16or32(vbuf[packed16 ? e >> 1 : e], e); }
float loadO(uint e) { return load16or32(obuf[packed16 ? e >> 1 : e], e); }
float loadDO(uint e) { return load16or32(dobuf[packed16 ? e >> 1 : e], e); }

uint bIdx, maskHead, biasHead;  // set by main (per query head in the key pass)

bool maskAt(uint i, uint j) {
	uint e = P.maskOff + bIdx * P.maskSB + maskHead * P.maskSH + i * P.maskSI + j * P.maskSJ;
	return ((maskb[e >> 2] >> ((e & 3u) * 8u)) & 0xffu) != 0u;
}

float biasAt(uint i, uint j) {
	return biasb[P.biasOff + bIdx * P.biasSB + biasHead * P.biasSH + i * P.biasSI + j * P.biasSJ];
}

// tanh without overflow for any finite x (as attention.comp).
float safeTanh(float x) {
	float t = exp(-2.0 * abs(x));
	float y = (1.0 - t) / (1.0 + t);
	return x < 0.0 ? -y : y;
}

// The score of a kept pair from dot(q_i, k_j), as the forward computes it, and in capd
// the derivative of the softcap (1 - tanh^2 of the raw score over softcap; 1 when off).
float pairScore(float dot, float del, bool hasBias, uint i, uint j, out float capd) {
	float s = P.scale * dot + del;
	if (hasBias) s += biasAt(i, j);
	capd = 1.0;
	if (P.softcap > 0.0) {
		float t = safeTanh(s / P.softcap);
		s = P.softcap * t;
		capd = 1.0 - t * t;
	}
	return s;
}

// Adds x to a float32 stored as uint bits, by compare-and-swap: works on every device
// (VK_EXT_shader_atomic_float is not enabled by package vk). Order of additions, and
// so the rounding, depends on scheduling.
void atomicAddDK(uint e, float x) {
	uint old = dkb[e];
	for (;;) {
		uint prev = atomicCompSwap(dkb[e], old, floatBitsToUint(uintBitsToFloat(old) + x));
		if (prev == old) break;
		old = prev;
	}
}
void atomicAddDV(uint e, float x) {
	uint old = dvb[e];
	for (;;) {
		uint prev = atomicCompSwap(dvb[e], old, floatBitsToUint(uintBitsToFloat(old) + x));
		if (prev == old) break;
		old = prev;
	}
}
void atomicAddDD(uint e, float x) {
	uint old = ddb[e];
	for (;;) {
		uint prev = atomicCompSwap(ddb[e], old, floatBitsToUint(uintBitsToFloat(old) + x));
		if (prev == old) break;
		old = prev;
	}
}

// keyRows gives the rows [lo, hi) of the plan of (batch, bias head) bhPlan that keep key j
// (lo = hi: none) and j's ord, from the plan alone:
//   row, causal:      rows from position j on while kappa_j >= tau_i: tau never decreases
//                     down the rows, so that is a contiguous range, its end found by a
//                     binary search over tau;
//   shared (or row, not causal): keys of S_final (kappa_j >= its last entry), rows at
//                     positions >= j when causal, else every row;
//   none, explicit:   valid keys, rows at positions >= j when causal, else every row
//                     (explicit then tests the mask per pair).
void keyRows(uint j, uint bhPlan, out uint lo, out uint hi, out uint o) {
	bool causal = P.causal != 0u;
	lo = 0u;
	hi = 0u;
	o = ordb[bhPlan * P.Lk + j];
	int first = causal ? max(int(j) - P.posOffset, 0) : 0;
	if (o == 0u || first >= int(P.Lq)) return;
	lo = uint(first);
	hi = P.Lq;
	uvec2 kap = uvec2(o, j);
	if (P.mode == MODE_ROW && causal) {
		// First row at or after lo whose threshold is above kappa_j.
		uint a = lo, b = P.Lq;
		while (a < b) {
			uint m = (a + b) >> 1;
			if (keyGE(kap, taub[bhPlan * P.Lq + m])) a = m + 1u; else b = m;
		}
		hi = a;
	} else if (P.mode == MODE_SHARED || P.mode == MODE_ROW) {
		uint at = bhPlan * (P.nblocks + 1u) + P.nblocks;
		uint cnt = ucount[at];
		if (cnt == 0u || !keyGE(kap, ub[at * P.ncap + cnt - 1u])) hi = lo;
	}
}
