#version 450
// Decode attention (the KV-cache decode path): a few query rows (P.Lq <= 4) over a long key sequence, split over the keys (flash-decoding). Modes row with
// causality (keep key j for row i when j <= p_i, ord_j != 0 and (ord_j, j) >= tau_i;
// tau from select_topw or the plan) and none (j <= p_i when causal, ord_j != 0); spec
// section 3's scores: scale * q.k + weight, softcap; fp32, fp16 or bf16 storage.
//
// variant split: workgroup (slice s, group of GH query heads of one kv head, batch b)
//   walks the keys [s*NSL, (s+1)*NSL); each subgroup takes every NSGW-th key, skips it
//   unless some row keeps it (ord and tau only: a dropped key costs one 4-byte read per
//   bias head), and for a kept key reads its K and V rows once for all GH heads (lanes
//   over D), so the traffic is that of the kept keys. Per row (GH heads x Lq rows, at
//   most NR) it keeps a running max m, sum l and o (lanes hold DPL = DH / SG elements),
//   and each subgroup writes its (m, l, o) to part[b][h][i][s * NSGW + subgroup].
// variant reduce: workgroup (row i, head h, batch b) merges the partials:
//   O = sum_s o_s e^(m_s - M) / L, L = sum_s l_s e^(m_s - M), LSE = M + log L; a row
//   with no kept key gets O = 0, LSE = -inf.
// A row only ever touches the keys it keeps, so a NaN or Inf in V reaches exactly the
// rows that keep its key.
//
// variant: split -DSPLIT=1
// variant: reduce
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x_id = 2) in;  // split: NSGW subgroups (NT = NSGW * SG); reduce: any

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;   // head dimension, a multiple of SG
layout(constant_id = 1) const uint NSL = 1024; // keys per slice
layout(constant_id = 3) const uint SG = 32;   // subgroup size (the pipeline pins it)
layout(constant_id = 4) const uint NR = 4;    // most rows (query heads x rows) of a workgroup
const uint DPL = DH / SG;
const uint NSGW = 4u;                          // subgroups of a split workgroup

// Query heads per split workgroup: the largest divisor of G whose rows fit NR.
uint headsPerGroup() {
	uint best = 1u;
	for (uint g = 1u; g <= P.G; g++)
		if (P.G % g == 0u && g * P.Lq <= NR) best = g;
	return best;
}

layout(std430, binding = 1) readonly buffer BufQ { uint qbuf[]; };
layout(std430, binding = 2) readonly buffer BufK { uint kbuf[]; };
layout(std430, binding = 3) readonly buffer BufV { uint vbuf[]; };
layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };   // [B*Hb][Lk]
layout(std430, binding = 5) readonly buffer BufTau { uvec2 taub[]; };  // [B*Hb][Lq]
layout(std430, binding = 6) buffer BufPart { float part[]; };          // [B][H][Lq][S][DH + 2]
layout(std430, binding = 7) buffer BufO { uint ob[]; };
layout(std430, binding = 8) writeonly buffer BufLSE { float lseb[]; };

const float NEG_INF = -1.0 / 0.0;

bool packed16, bf16;
float loadQ(uint e) { return packed16 ? unpack16(qbuf[e >> 1], e, bf16) : uintBitsToFloat(qbuf[e]); }
float loadK(uint e) { return packed16 ? unpack16(kbuf[e >> 1], e, bf16) : uintBitsToFloat(kbuf[e]); }
float loadV(uint e) { return packed16 ? unpack16(vbuf[e >> 1], e, bf16) : uintBitsToFloat(vbuf[e]); }

float safeTanh(float x) {
	float t = exp(-2.0 * abs(x));
	float y = (1.0 - t) / (1.0 + t);
	return x < 0.0 ? -y : y;
}

#ifdef SPLIT
shared float Qs[NR * DH];

void main() {
	uint s = gl_WorkGroupID.x, hg = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
	uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID, nsg = gl_NumSubgroups;
	uint lid = gl_LocalInvocationID.x;
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;
	uint n = P.Lq, S = (P.Lk + NSL - 1u) / NSL;
	// The query heads of this workgroup: GH of one kv head's group (GH divides G, GH * n
	// <= NR), so their K and V rows are read once for all of them.
	uint GH = headsPerGroup();
	uint h0 = hg * GH, kvh = h0 / P.G, R = GH * n;  // rows r = g * n + i, head h0 + g
	bool causal = P.causal != 0u, rowCausal = P.mode == MODE_ROW && causal;
	bool sharedBias = P.Hb != P.H;  // one bias head (the kv head's) for every head here
	for (uint e = lid; e < R * DH; e += gl_WorkGroupSize.x) {
		uint r = e / DH, g = r / n, i = r - g * n;
		Qs[e] = loadQ(P.qOff + b * P.qSB + (h0 + g) * P.qSH + i * P.qSL + e % DH);
	}
	uvec2 tau[NR];
	for (uint r = 0u; r < NR; r++) {
		uint g = r / max(n, 1u), i = r - g * n;
		uint hb = sharedBias ? kvh : h0 + g;
		tau[r] = (r < R && rowCausal) ? taub[(b * P.Hb + hb) * P.Lq + i] : uvec2(0u);
	}
	barrier();

	float m[NR], l[NR], o[NR][DPL];
	for (uint r = 0u; r < NR; r++) {
		m[r] = NEG_INF;
		l[r] = 0.0;
		for (uint x = 0u; x < DPL; x++) o[r][x] = 0.0;
	}
	uint kBase = P.kOff + b * P.kSB + kvh * P.kSH, vBase = P.vOff + b * P.vSB + kvh * P.vSH;
	uint j1 = min((s + 1u) * NSL, P.Lk);
	for (uint j = s * NSL + sg; j < j1; j += nsg) {
		// Which rows keep key j (ord per bias head: one read when they share it).
		uint keep = 0u;
		uint ojShared = sharedBias ? ordb[(b * P.Hb + kvh) * P.Lk + j] : 0u;
		for (uint r = 0u; r < R; r++) {
			uint g = r / n, i = r - g * n;
			uint oj = sharedBias ? ojShared : ordb[(b * P.Hb + h0 + g) * P.Lk + j];
			int pi = int(i) + P.posOffset;
			bool k = oj != 0u && (!causal || int(j) <= pi);
			if (k && rowCausal) k = keyGE(uvec2(oj, j), tau[r]);
			if (k) keep |= 1u << r;
		}
		if (keep == 0u) continue;
		float kv[DPL];
		for (uint x = 0u; x < DPL; x++) kv[x] = loadK(kBase + j * P.kSL + lane + SG * x);
		float vv[DPL];
		for (uint x = 0u; x < DPL; x++) vv[x] = loadV(vBase + j * P.vSL + lane + SG * x);
		for (uint r = 0u; r < R; r++) {
			if ((keep & (1u << r)) == 0u) continue;
			uint g = r / n;
			float delta = unord(sharedBias ? ojShared : ordb[(b * P.Hb + h0 + g) * P.Lk + j]);
			float acc = 0.0;
			for (uint x = 0u; x < DPL; x++) acc = fma(Qs[r * DH + lane + SG * x], kv[x], acc);
			float sc = P.scale * subgroupAdd(acc) + delta;
			if (P.softcap > 0.0) sc = P.softcap * safeTanh(sc / P.softcap);
			float mn = max(m[r], sc);
			float alpha = m[r] == NEG_INF ? 0.0 : exp(m[r] - mn);
			float pj = exp(sc - mn);
			l[r] = l[r] * alpha + pj;
			for (uint x = 0u; x < DPL; x++) o[r][x] = o[r][x] * alpha + pj * vv[x];
			m[r] = mn;
		}
	}
	// Every subgroup leaves its own partial: part[b][h][i][s * NSGW + sg].
	for (uint r = 0u; r < R; r++) {
		uint g = r / n, i = r - g * n;
		uint at = ((((b * P.H + h0 + g) * P.Lq + i) * S + s) * NSGW + sg) * (DH + 2u);
		if (lane == 0u) {
			part[at] = m[r];
			part[at + 1u] = l[r];
		}
		for (uint x = 0u; x < DPL; x++) part[at + 2u + lane + SG * x] = o[r][x];
	}
}
#else
void main() {
	uint i = gl_WorkGroupID.x, h = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
	uint lid = gl_LocalInvocationID.x;
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;
	uint S = (P.Lk + NSL - 1u) / NSL * NSGW;  // partials: slices x subgroups
	uint pBase = (((b * P.H + h) * P.Lq) + i) * S;
	float M = NEG_INF;
	for (uint s = 0u; s < S; s++) M = max(M, part[(pBase + s) * (DH + 2u)]);
	float L = 0.0;
	for (uint s = 0u; s < S; s++) {
		float ms = part[(pBase + s) * (DH + 2u)];
		if (ms != NEG_INF) L += exp(ms - M) * part[(pBase + s) * (DH + 2u) + 1u];
	}
	if (lid == 0u) lseb[(b * P.H + h) * P.Lq + i] = L > 0.0 ? M + log(L) : NEG_INF;
	uint oBase = P.oOff + b * P.oSB + h * P.oSH + i * P.oSL;
	// Pairs of elements per invocation, so 16-bit outputs leave as whole words.
	for (uint d = 2u * lid; d < DH; d += 2u * gl_WorkGroupSize.x) {
		vec2 acc = vec2(0.0);
		for (uint s = 0u; s < S; s++) {
			float ms = part[(pBase + s) * (DH + 2u)];
			if (ms == NEG_INF) continue;
			float f = exp(ms - M);
			acc += f * vec2(part[(pBase + s) * (DH + 2u) + 2u + d], part[(pBase + s) * (DH + 2u) + 3u + d]);
		}
		acc = L > 0.0 ? acc / L : vec2(0.0);
		if (packed16) ob[(oBase + d) >> 1] = pack16(acc.x, acc.y, bf16);
		else {
			ob[oBase + d] = floatBitsToUint(acc.x);
			ob[oBase + d + 1u] = floatBitsToUint(acc.y);
		}
	}
}
#endif
