// Package ref is the float64 CPU reference of Dynamic Mask Attention (DMA),
// written to be read, not to be fast. Every GPU path in the project is
// tested against it.
//
// The contract is the project's spec, shared/spec/dma-semantics.md. In
// short, for query row i of head h:
//
//	dt[b,j,c]    = Vf[b,j,:]·Wdt[:,c] + bdt[c]             (section 1)
//	delta[b,c,j] = exp(A[c]*softplus(dt)) or A[c]*softplus(dt)
//	keep(i,j)    = the selection of mode row/shared/none/explicit (section 2)
//	s_ij         = scale*q_i·k_j + delta[b,c(h),j] (+ explicit bias)
//	s_ij         = softcap*tanh(s_ij/softcap)       if softcap > 0
//	o_i          = softmax over the kept j of s_ij, applied to v_j
//
// The steps map onto the functions of this package:
//
//	DynamicWeights (DynamicWeights64)  section 1, V -> delta
//	Keep, TopW, Better                 section 2, delta -> boolean mask
//	Forward                            section 3, -> O and LSE
//	Backward                           section 4, dO -> dQ, dK, dV, dDelta
//	WeightsBackward                    section 4, dDelta -> dA, dWdt, dbdt, dV
//
// # Non-finite values
//
// NaN and infinities follow spec section 7: Better ranks weights as
// torch.topk does (NaN above +Inf), Forward gives NaN O and LSE to the rows
// whose kept scores hold a NaN or +Inf and to no other row, and Backward and
// WeightsBackward add no term whose coefficient is exactly 0, so a
// non-finite value reaches only the gradients that the rows keeping it lead
// to.
//
// # Layouts
//
// Q, K, V, O and their gradients are Tensor4 values in [B, L, H, D] order
// (Q: [B, Lq, H, D]; K, V: [B, Lk, Hkv, D]). The weights delta and dDelta are
// flat [B][Hb][Lk] slices, index (b*Hb+c)*Lk+j. LSE is a flat [B][H][Lq]
// slice, index (b*H+h)*Lq+i. Keep returns a flat [B][H][Lq][Lk] mask.
//
// # Heads
//
// With g = H/Hkv, query head h reads kv head h/g. Hb, the number of bias
// heads, is H or Hkv; query head h uses bias head h when Hb == H, else h/g.
//
// # Precision
//
// Everything is float64. The one place float32 enters is the weights: the
// spec stores delta as float32 and selects on those values, so DynamicWeights
// rounds through float32, and callers pass its result to Keep, Forward and
// Backward. DynamicWeights64 skips the rounding, which finite-difference
// tests need.
//
// Functions that take attention inputs return an error when shapes or options
// do not fit; the weight functions panic instead, like gonum's mat, since a
// mismatch there is a programming error with nothing to recover.
package ref
