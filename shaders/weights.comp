#version 450
// Dynamic weights (spec section 1): for every key j of batch b and bias head c,
//   dt = sum_k Vf[b, j, k] * Wdt[k, c] + bdt[c]      (Vf: the kv heads of key j, in order)
//   delta[b, c, j] = exp(A[c] * softplus(dt))       form 0
//                  = A[c] * softplus(dt)            form 1
// A tiled product Vf * Wdt in float32. A workgroup of 256 invocations computes BM keys x
// BN bias heads (gl_WorkGroupID: x key tile, y bias-head tile, z batch), walking
// K = Hkv * D in steps of BK through shared memory. Invocation t works on the keys
// ty + RX * i (i < TM) and the bias heads tx + CX * n (n < TN), ty = t % RX, tx = t / RX,
// so neighbouring invocations write neighbouring keys of delta. Every output sums its K
// products in order k = 0, 1, ..., K-1 with fma. No subgroup operation: any subgroup size.
// V is read as 32-bit words: float bits (storage fp32) or two packed 16-bit elements
// (fp16 or bf16).
// The host (internal/kern/weights.go) picks the specialization constants.

#extension GL_EXT_control_flow_attributes : require

#include "dma_common.glsl"

layout(constant_id = 0) const uint CX = 16; // invocations along bias heads (power of 2, <= 16)
layout(constant_id = 1) const uint TN = 4;  // bias heads per invocation (<= 4)
layout(constant_id = 2) const uint TM = 4;  // keys per invocation (<= 4)
layout(constant_id = 3) const uint BK = 16; // K step

const uint NT = 256;
const uint RX = NT / CX;      // invocations along keys
const uint BM = RX * TM;      // keys per workgroup
const uint BN = CX * TN;      // bias heads per workgroup
const uint VSTRIDE = BM + 1;  // padded row of Vs: the staging stores hit distinct banks

layout(local_size_x = 256) in;

layout(std430, binding = 1) readonly buffer BufV { uint v[]; };
layout(std430, binding = 2) readonly buffer BufW { float wdt[]; };
layout(std430, binding = 3) readonly buffer BufBdt { float bdt[]; };
layout(std430, binding = 4) readonly buffer BufA { float aw[]; };
layout(std430, binding = 5) writeonly buffer BufDelta { float delta[]; };

shared float Vs[BK * VSTRIDE]; // Vs[k * VSTRIDE + key]
shared float Ws[BK * BN];      // Ws[k * BN + head]

// log(1 + e) for e in [0, 1], to float32 accuracy without calling log near 1 (whose
// absolute error Vulkan allows to be 2^-21): 2 atanh(s), s = e / (2 + e) <= 1/3, by its
// series; the first omitted term is below 2^-25 relative.
float log1pSmall(float e) {
	float s = e / (2.0 + e);
	float s2 = s * s;
	float p = 1.0 / 15.0;
	p = fma(p, s2, 1.0 / 13.0);
	p = fma(p, s2, 1.0 / 11.0);
	p = fma(p, s2, 1.0 / 9.0);
	p = fma(p, s2, 1.0 / 7.0);
	p = fma(p, s2, 1.0 / 5.0);
	p = fma(p, s2, 1.0 / 3.0);
	p = fma(p, s2, 1.0);
	return 2.0 * s * p;
}

// softplus(x) = max(x, 0) + log(1 + exp(-|x|)): exp never overflows (its argument is
// <= 0), and an underflow to 0 is the right limit.
float softplus(float x) {
	return max(x, 0.0) + log1pSmall(exp(-abs(x)));
}

const uint VL = (BM * BK + NT - 1) / NT; // V elements each invocation stages per chunk
const uint WL = (BK * BN + NT - 1) / NT; // Wdt elements likewise

// Set once by main, read by loadChunk.
uint Lk_, Hb_, D_, K, vSL, vSH, vBase, j0, c0, vk, vr0, wn, wk0;
bool packed16, bf16;

// Staging roles: an invocation always loads feature vk of the V chunk (keys vr0,
// vr0 + NT/BK, ...; neighbouring invocations read neighbouring features, contiguous
// within a head) and bias head wn of the Wdt chunk (rows wk0, wk0 + NT/BN, ...).
// Out-of-range elements load as 0.
void loadChunk(uint k0, out float vx[VL], out float wx[WL]) {
	uint kk = k0 + vk;
	uint h = kk / D_; // one division per chunk
	uint vAt = vBase + h * vSH + (kk - h * D_);
	[[unroll]] for (uint q = 0; q < VL; q++) {
		uint r = vr0 + q * (NT / BK), j = j0 + r;
		float x = 0.0;
		if (r < BM && j < Lk_ && kk < K) {
			uint e = vAt + j * vSL;
			x = packed16 ? unpack16(v[e >> 1], e, bf16) : uintBitsToFloat(v[e]);
		}
		vx[q] = x;
	}
	[[unroll]] for (uint q = 0; q < WL; q++) {
		uint kw = k0 + wk0 + q * (NT / BN), c = c0 + wn;
		wx[q] = (wk0 + q * (NT / BN) < BK && kw < K && c < Hb_) ? wdt[kw * Hb_ + c] : 0.0;
	}
}

void main() {
	// The parameters, read once: kept in registers rather than reloaded in the loops.
	Lk_ = P.Lk; Hb_ = P.Hb; D_ = P.D; K = P.Hkv * P.D;
	vSL = P.vSL; vSH = P.vSH;
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;

	uint tid = gl_LocalInvocationID.x;
	uint ty = tid % RX, tx = tid / RX;
	uint b = gl_WorkGroupID.z;
	j0 = gl_WorkGroupID.x * BM;
	c0 = gl_WorkGroupID.y * BN;
	vBase = P.vOff + b * P.vSB;
	vk = tid % BK; vr0 = tid / BK;
	wn = tid % BN; wk0 = tid / BN;

	float acc[4][4];
	[[unroll]] for (uint i = 0; i < 4; i++)
		[[unroll]] for (uint n = 0; n < 4; n++) acc[i][n] = 0.0;

	// The next chunk is loaded into registers (all loads issued back to back) while the
	// current one is multiplied; the counts are constants once specialized.
	float vx[VL], wx[WL];
	loadChunk(0u, vx, wx);
	for (uint k0 = 0; k0 < K; k0 += BK) {
		[[unroll]] for (uint q = 0; q < VL; q++) {
			uint r = vr0 + q * (NT / BK);
			if (r < BM) Vs[vk * VSTRIDE + r] = vx[q];
		}
		[[unroll]] for (uint q = 0; q < WL; q++) {
			uint k = wk0 + q * (NT / BN);
			if (k < BK) Ws[k * BN + wn] = wx[q];
		}
		barrier();
		if (k0 + BK < K) loadChunk(k0 + BK, vx, wx);
		// Loops of constant trip count 4, unrolled, so that acc stays in registers; the
		// TM and TN guards fold away once the pipeline is specialized.
		for (uint k = 0; k < BK; k++) {
			float av[4], bv[4];
			[[unroll]] for (uint i = 0; i < 4; i++) av[i] = i < TM ? Vs[k * VSTRIDE + ty + RX * i] : 0.0;
			[[unroll]] for (uint n = 0; n < 4; n++) bv[n] = n < TN ? Ws[k * BN + tx + CX * n] : 0.0;
			[[unroll]] for (uint i = 0; i < 4; i++)
				[[unroll]] for (uint n = 0; n < 4; n++)
					if (i < TM && n < TN) acc[i][n] = fma(av[i], bv[n], acc[i][n]);
		}
		barrier();
	}

	const bool hasBdt = P.hasBdt != 0u, expForm = P.form == 0u;
	[[unroll]] for (uint n = 0; n < 4; n++) {
		uint c = c0 + tx + CX * n;
		if (n >= TN || c >= Hb_) continue;
		float bias = hasBdt ? bdt[c] : 0.0;
		float a = aw[c];
		uint outBase = (b * Hb_ + c) * Lk_;
		[[unroll]] for (uint i = 0; i < 4; i++) {
			uint j = j0 + ty + RX * i;
			if (i >= TM || j >= Lk_) continue;
			float z = a * softplus(acc[i][n] + bias);
			delta[outBase + j] = expForm ? exp(z) : z;
		}
	}
}
