#version 450
// Backward of the dynamic weights (spec section 1; reference: ref.WeightsBackward; host
// side: internal/kern/weights_bwd.go). From dDelta, float32 [B][Hb][Lk], to the gradients
// of A, Wdt, bdt and the term of dV that flows through Vf. Three passes (PASS, a
// specialization constant), N = B * Lk rows n = b * Lk + j, K = Hkv * D features:
//
//   PASS 0, one invocation per (n, c): dt = Vf[n] . Wdt[:, c] + bdt[c] (the sum in the
//     order weights.comp uses), sp = softplus(dt), sg = sigmoid(dt); then
//       exp form:    delta = exp(A sp),  ddt = dDelta delta A sg,  dA term = dDelta delta sp
//       linear form:                     ddt = dDelta A sg,        dA term = dDelta sp
//     into scratch: ddt at [n][c], the dA term at N*Hb + [n][c].
//   PASS 1, one invocation per (segment s, k, c), k < K + 2: the partial sums over the
//     rows n of segment s (SEG consecutive rows) of Vf[n][k] ddt[n][c] (k < K), ddt[n][c]
//     (k = K, for dbdt) and term[n][c] (k = K + 1, for dA), into scratch after the above:
//     [S][K + 2][Hb], S = ceil(N / SEG). Segments keep every invocation's loop short
//     (SEG rows) whatever the sequence length, and the scratch linear in it.
//   PASS 3, one invocation per (k, c): dWdt[k][c] (k < K), dbdt[c] (k = K), dA[c]
//     (k = K + 1) = the S partial sums, added in segment order.
//   PASS 2, one invocation per (n, k): dV[b, j, h, d] += sum_c ddt[n][c] Wdt[k][c]
//     (k = h * D + d), through the float32 view in the push constants: the caller's
//     dV buffer may already hold the attention's dV, and then holds the total.
// Every sum runs in a fixed order in one invocation: results are bit-identical run to
// run. A key with dDelta = 0 (kept by no row: a padded key) adds nothing, so a NaN or an
// infinity in its V reaches no gradient (spec section 7, ref.WeightsBackward). Plain loops, no shared memory or subgroup operation: any device.

#include "dma_common.glsl"

layout(constant_id = 0) const uint PASS = 0;
const uint SEG = 256;  // rows per segment of PASS 1 (kern.weightsBwdSeg)
layout(local_size_x = 64) in;

layout(std430, binding = 1) readonly buffer BufV { uint vbuf[]; };
layout(std430, binding = 2) readonly buffer BufW { float wdt[]; };     // [K][Hb]
layout(std430, binding = 3) readonly buffer BufBdt { float bdt[]; };   // [Hb]
layout(std430, binding = 4) readonly buffer BufA { float aw[]; };      // [Hb]
layout(std430, binding = 5) readonly buffer BufDD { float ddelta[]; }; // [B][Hb][Lk]
layout(std430, binding = 6) buffer BufS { float scr[]; };              // [2][N][Hb], then [S][K+2][Hb]
layout(std430, binding = 7) writeonly buffer BufDW { float dwdt[]; };  // [K][Hb]
layout(std430, binding = 8) writeonly buffer BufDA { float da[]; };    // [Hb]
layout(std430, binding = 9) writeonly buffer BufDB { float dbdt[]; };  // [Hb]
layout(std430, binding = 10) buffer BufDV { float dvb[]; };

layout(push_constant) uniform Push { uint dvOff, dvSB, dvSL, dvSH; } PC;

bool packed16, bf16;

// Feature k of row n of Vf (the kv heads of key j, concatenated).
float vf(uint n, uint k) {
	uint b = n / P.Lk, j = n - b * P.Lk;
	uint h = k / P.D;
	uint e = P.vOff + b * P.vSB + j * P.vSL + h * P.vSH + (k - h * P.D);
	return packed16 ? unpack16(vbuf[e >> 1], e, bf16) : uintBitsToFloat(vbuf[e]);
}

// softplus as weights.comp computes it.
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
float softplus(float x) { return max(x, 0.0) + log1pSmall(exp(-abs(x))); }

// 1 / (1 + exp(-x)) without overflow for either sign.
float sigmoid(float x) {
	float e = exp(-abs(x));
	return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

void main() {
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;
	uint Hb = P.Hb, K = P.Hkv * P.D, N = P.B * P.Lk;
	// Items are walked grid-stride (the host caps the workgroup count at the device's).
	uint stride = gl_NumWorkGroups.x * 64u;
	uint S = (N + SEG - 1u) / SEG, KP = (K + 2u) * Hb, part = 2u * N * Hb;
	uint items = PASS == 0u ? N * Hb : PASS == 1u ? S * KP : PASS == 3u ? KP : N * K;
	for (uint it = gl_GlobalInvocationID.x; it < items; it += stride) {
		if (PASS == 0u) {
			uint n = it / Hb, c = it - n * Hb;
			float acc = 0.0;
			for (uint k = 0u; k < K; k++) acc = fma(vf(n, k), wdt[k * Hb + c], acc);
			float dt = acc + (P.hasBdt != 0u ? bdt[c] : 0.0);
			uint b = n / P.Lk, j = n - b * P.Lk;
			float g = ddelta[(b * Hb + c) * P.Lk + j];
			float a = aw[c], sp = softplus(dt), sg = sigmoid(dt);
			float ddt = 0.0, term = 0.0;  // a key with dDelta 0 adds nothing, not even 0 * NaN
			if (isZeroF(g)) {
			} else if (P.form == 0u) {
				float d = exp(a * sp);
				ddt = g * d * a * sg;
				term = g * d * sp;
			} else {
				ddt = g * a * sg;
				term = g * sp;
			}
			scr[n * Hb + c] = ddt;
			scr[N * Hb + n * Hb + c] = term;
		} else if (PASS == 1u) {
			uint sg = it / KP, r = it - sg * KP, k = r / Hb, c = r - k * Hb;
			uint n0 = sg * SEG, n1 = min(n0 + SEG, N);
			float acc = 0.0;
			if (k < K) {
				for (uint n = n0; n < n1; n++) {
					float t = scr[n * Hb + c];
					if (!isZeroF(t)) acc = fma(vf(n, k), t, acc);  // 0 * NaN stays out
				}
			} else {
				uint at = k == K ? c : N * Hb + c;  // ddt (for dbdt) or the dA terms
				for (uint n = n0; n < n1; n++) acc += scr[at + n * Hb];
			}
			scr[part + it] = acc;
		} else if (PASS == 3u) {
			uint k = it / Hb, c = it - k * Hb;
			float acc = 0.0;
			for (uint sg = 0u; sg < S; sg++) acc += scr[part + sg * KP + it];
			if (k < K) dwdt[it] = acc;
			else if (k == K) {
				if (P.hasBdt != 0u) dbdt[c] = acc;  // no bdt: its binding may alias dA
			} else da[c] = acc;
		} else {
			uint n = it / K, k = it - n * K;
			float acc = 0.0;
			for (uint c = 0u; c < Hb; c++) acc = fma(scr[n * Hb + c], wdt[k * Hb + c], acc);
			uint b = n / P.Lk, j = n - b * P.Lk, h = k / P.D;
			uint e = PC.dvOff + b * PC.dvSB + j * PC.dvSL + h * PC.dvSH + (k - h * P.D);
			dvb[e] += acc;
		}
	}
}
