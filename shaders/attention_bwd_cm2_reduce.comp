#version 450
// The coopmat2 backward's last pass (modes row and shared; host side:
// internal/kern/backward_cm2.go): each key's dK, dV and dDelta from the partial sums the
// key pass of attention_bwd_cm2.comp left per packed region (PdK, PdV float32
// [R][NP][D], PdD [R][NP], dK unscaled), added in a fixed order: bias heads of the kv
// head's group in order, then regions in block order. No atomics: bit-identical run to
// run.
//
// Key j of bias head pair bh sits in the regions whose list holds it: mode row with
// causality, U_e for e from j's block on while j stays in S_e (a key once evicted never
// returns: S_{e+1} is the best of S_e and block e); mode shared, S_final. Its entry in a
// list sorted by kappa descending is found by binary search. A padded key (ord 0) is in
// no list: its gradients are 0.
//
// One workgroup per key (x, a grid-stride loop), kv head (y) and batch (z); invocation
// lid owns columns lid, lid + 64, ... of dK and dV.

#include "dma_common.glsl"

layout(local_size_x = 64) in;

layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };
layout(std430, binding = 5) readonly buffer BufU { uvec2 ub[]; };
layout(std430, binding = 6) readonly buffer BufUC { uint ucount[]; };
layout(std430, binding = 12) buffer BufDK { float dkb[]; };
layout(std430, binding = 13) buffer BufDV { float dvb[]; };
layout(std430, binding = 14) buffer BufDD { float ddb[]; };
layout(std430, binding = 16) readonly buffer BufPdK { float pdk[]; };
layout(std430, binding = 17) readonly buffer BufPdV { float pdv[]; };
layout(std430, binding = 18) readonly buffer BufPdD { float pdd[]; };

layout(push_constant) uniform Push {
	uint doOff, doSB, doSL, doSH;
	uint dqOff, dqSB, dqSL, dqSH;
	uint dkOff, dkSB, dkSL, dkSH;
	uint dvOff, dvSB, dvSL, dvSH;
} PC;

// Position of kap in the list of n entries at base (sorted by kappa descending), or ~0u.
uint findEntry(uint base, uint n, uvec2 kap) {
	uint lo = 0u, hi = n;
	while (lo < hi) {
		uint mid = (lo + hi) >> 1;
		uvec2 u = ub[base + mid];
		if (u.x > kap.x || (u.x == kap.x && u.y > kap.y)) lo = mid + 1u; else hi = mid;
	}
	return lo < n && ub[base + lo] == kap ? lo : ~0u;
}

void main() {
	uint lid = gl_LocalInvocationID.x;
	uint kvh = gl_WorkGroupID.y, bIdx = gl_WorkGroupID.z;
	bool rowCausal = P.mode == MODE_ROW && P.causal != 0u;
	uint np = (P.ncap + 63u) / 64u * 64u;
	uint nbr = rowCausal ? P.nblocks : 1u;
	bool perHeadBias = P.Hb == P.H;
	uint heads = perHeadBias ? P.G : 1u;
	for (uint j = gl_WorkGroupID.x; j < P.Lk; j += gl_NumWorkGroups.x) {
		float sk[4], sv[4];
		for (uint k = 0u; k < 4u; k++) {
			sk[k] = 0.0;
			sv[k] = 0.0;
		}
		for (uint g = 0u; g < heads; g++) {
			uint hb = perHeadBias ? kvh * P.G + g : kvh;
			uint bh = bIdx * P.Hb + hb;
			uint o = ordb[bh * P.Lk + j];
			float sd = 0.0;
			if (o != 0u) {
				uvec2 kap = uvec2(o, j);
				uint e = rowCausal ? j / P.blockC : 0u;
				for (; e < nbr; e++) {
					uint entry = bh * (P.nblocks + 1u) + (rowCausal ? e : P.nblocks);
					uint at = findEntry(entry * P.ncap, ucount[entry], kap);
					if (at == ~0u) break;
					uint row = (bh * nbr + e) * np + at;
					for (uint k = 0u; k < 4u; k++) {
						uint d = lid + 64u * k;
						if (d < P.D) {
							sk[k] += pdk[row * P.D + d];
							sv[k] += pdv[row * P.D + d];
						}
					}
					sd += pdd[row];
				}
			}
			if (lid == 0u) ddb[bh * P.Lk + j] = sd;
		}
		uint dkAt = PC.dkOff + bIdx * PC.dkSB + kvh * PC.dkSH + j * PC.dkSL;
		uint dvAt = PC.dvOff + bIdx * PC.dvSB + kvh * PC.dvSH + j * PC.dvSL;
		for (uint k = 0u; k < 4u; k++) {
			uint d = lid + 64u * k;
			if (d < P.D) {
				dkb[dkAt + d] = P.scale * sk[k];
				dvb[dvAt + d] = sv[k];
			}
		}
	}
}
