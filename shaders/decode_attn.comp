#version 450
// Decode attention (groundwork of the KV-cache decode path): a few query rows (P.Lq <=
// NQ) over a long key sequence, split over the keys (flash-decoding). Modes row with
// causality (keep key j for row i when j <= p_i, ord_j != 0 and (ord_j, j) >= tau_i;
// tau from select_topw or the plan) and none (j <= p_i when causal, ord_j != 0); spec
// section 3's scores: scale * q.k + weight, softcap; fp32, fp16 or bf16 storage.
//
// variant split: workgroup (slice s, head h, batch b) walks the keys [s*NSL, (s+1)*NSL);
//   each subgroup takes every NSG-th key, skips it unless some row keeps it (ord and
//   tau only: a dropped key costs one 4-byte read), and for a kept key reads its K and V
//   rows (lanes over D), so the work and traffic are those of the kept keys. Per row it
//   keeps a running max m, sum l and o (lanes hold DPL = DH / SG elements); the
//   subgroups are then merged in shared memory and (m, l, o) goes to part[b][h][i][s].
// variant reduce: workgroup (row i, head h, batch b) merges the slices:
//   O = sum_s o_s e^(m_s - M) / L, L = sum_s l_s e^(m_s - M), LSE = M + log L; a row
//   with no kept key gets O = 0, LSE = -inf.
// A row only ever touches the keys it keeps, so a NaN or Inf in V reaches exactly the
// rows that keep its key.
//
// variant: split -DSPLIT=1
// variant: reduce
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x_id = 2) in;  // split: 4 subgroups (NT = 4 * SG); reduce: any

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;   // head dimension, a multiple of SG
layout(constant_id = 1) const uint NSL = 1024; // keys per slice
layout(constant_id = 3) const uint SG = 32;   // subgroup size (the pipeline pins it)
const uint NQ = 4u;                            // most query rows
const uint DPL = DH / SG;

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
const uint NSGW = 4u;  // subgroups per workgroup
shared float Qs[NQ * DH];
shared float mS[NSGW * NQ], lS[NSGW * NQ];
shared float oS[NSGW * NQ * DH];

void main() {
	uint s = gl_WorkGroupID.x, h = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
	uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID, nsg = gl_NumSubgroups;
	uint lid = gl_LocalInvocationID.x;
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;
	uint n = P.Lq, S = (P.Lk + NSL - 1u) / NSL;
	uint kvh = h / P.G, hb = P.Hb == P.H ? h : h / P.G, bh = b * P.Hb + hb;
	bool causal = P.causal != 0u, rowCausal = P.mode == MODE_ROW && causal;
	uint qBase = P.qOff + b * P.qSB + h * P.qSH;
	for (uint e = lid; e < n * DH; e += gl_WorkGroupSize.x) Qs[e] = loadQ(qBase + (e / DH) * P.qSL + e % DH);
	uvec2 tau[NQ];
	for (uint i = 0u; i < NQ; i++) tau[i] = (i < n && rowCausal) ? taub[bh * P.Lq + i] : uvec2(0u);
	barrier();

	float m[NQ], l[NQ], o[NQ][DPL];
	for (uint i = 0u; i < NQ; i++) {
		m[i] = NEG_INF;
		l[i] = 0.0;
		for (uint x = 0u; x < DPL; x++) o[i][x] = 0.0;
	}
	uint kBase = P.kOff + b * P.kSB + kvh * P.kSH, vBase = P.vOff + b * P.vSB + kvh * P.vSH;
	uint j1 = min((s + 1u) * NSL, P.Lk);
	for (uint j = s * NSL + sg; j < j1; j += nsg) {
		uint oj = ordb[bh * P.Lk + j];
		if (oj == 0u) continue;
		uint keep = 0u;
		for (uint i = 0u; i < n; i++) {
			int pi = int(i) + P.posOffset;
			bool k = !causal || int(j) <= pi;
			if (k && rowCausal) k = keyGE(uvec2(oj, j), tau[i]);
			if (k) keep |= 1u << i;
		}
		if (keep == 0u) continue;
		float kv[DPL];
		for (uint x = 0u; x < DPL; x++) kv[x] = loadK(kBase + j * P.kSL + lane + SG * x);
		float vv[DPL];
		for (uint x = 0u; x < DPL; x++) vv[x] = loadV(vBase + j * P.vSL + lane + SG * x);
		float delta = unord(oj);
		for (uint i = 0u; i < n; i++) {
			if ((keep & (1u << i)) == 0u) continue;
			float acc = 0.0;
			for (uint x = 0u; x < DPL; x++) acc = fma(Qs[i * DH + lane + SG * x], kv[x], acc);
			float sc = P.scale * subgroupAdd(acc) + delta;
			if (P.softcap > 0.0) sc = P.softcap * safeTanh(sc / P.softcap);
			float mn = max(m[i], sc);
			float alpha = m[i] == NEG_INF ? 0.0 : exp(m[i] - mn);
			float pj = exp(sc - mn);
			l[i] = l[i] * alpha + pj;
			for (uint x = 0u; x < DPL; x++) o[i][x] = o[i][x] * alpha + pj * vv[x];
			m[i] = mn;
		}
	}
	// Merge the subgroups.
	for (uint i = 0u; i < n; i++) {
		if (lane == 0u) {
			mS[sg * NQ + i] = m[i];
			lS[sg * NQ + i] = l[i];
		}
		for (uint x = 0u; x < DPL; x++) oS[(sg * NQ + i) * DH + lane + SG * x] = o[i][x];
	}
	barrier();
	uint pBase = ((b * P.H + h) * P.Lq) * S;
	for (uint e = lid; e < n * (DH + 2u); e += gl_WorkGroupSize.x) {
		uint i = e / (DH + 2u), c = e % (DH + 2u);
		float M = NEG_INF;
		for (uint g = 0u; g < nsg; g++) M = max(M, mS[g * NQ + i]);
		float v = 0.0;
		for (uint g = 0u; g < nsg; g++) {
			float mg = mS[g * NQ + i];
			if (mg == NEG_INF) continue;
			float f = exp(mg - M);
			v += f * (c == 0u ? 0.0 : c == 1u ? lS[g * NQ + i] : oS[(g * NQ + i) * DH + c - 2u]);
		}
		part[((pBase + i * S + s)) * (DH + 2u) + c] = c == 0u ? M : v;
	}
}
#else
void main() {
	uint i = gl_WorkGroupID.x, h = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
	uint lid = gl_LocalInvocationID.x;
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;
	uint S = (P.Lk + NSL - 1u) / NSL;
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
