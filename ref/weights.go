package ref

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// WeightForm chooses how dt becomes a weight (spec section 1).
type WeightForm int

const (
	// FormExp is delta = exp(A * softplus(dt)), as in the paper and HF Doge.
	FormExp WeightForm = iota
	// FormLinear is delta = A * softplus(dt), a public variant.
	FormLinear
)

// String returns the form's name as the spec writes it.
func (f WeightForm) String() string {
	switch f {
	case FormExp:
		return "exp"
	case FormLinear:
		return "linear"
	}
	return fmt.Sprintf("WeightForm(%d)", int(f))
}

// WeightParams are the parameters of the dynamic weights.
type WeightParams struct {
	// Wdt is the [Hkv*D, Hb] projection, row-major as a flat slice of
	// length Hkv*D*Hb: Wdt[k*Hb+c].
	Wdt []float64
	// Bdt is the optional bias of dt, length Hb; nil means none.
	Bdt []float64
	// A scales softplus(dt) per bias head, length Hb; any sign is allowed.
	A []float64
	// Hb is the number of bias heads, H or Hkv of the attention call.
	Hb int
	// Form picks exp or linear.
	Form WeightForm
}

// Softplus returns log(1 + exp(x)) without overflow, as
// max(x, 0) + log1p(exp(-|x|)).
func Softplus(x float64) float64 {
	return max(x, 0) + math.Log1p(math.Exp(-math.Abs(x)))
}

// Sigmoid returns 1/(1 + exp(-x)), the derivative of Softplus, without
// overflow for either sign of x.
func Sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// dtMatrix returns dt = Vf*Wdt + bdt as a [B*Lk, Hb] matrix. The data of v
// in [B, Lk, Hkv, D] order is already Vf, [B*Lk, Hkv*D] row-major, with the
// heads of each key concatenated in head order.
func dtMatrix(v *Tensor4, p WeightParams) (vf, w, dt *mat.Dense) {
	if err := v.valid("v"); err != nil {
		panic(err)
	}
	n, kd := v.B*v.L, v.H*v.D
	if p.Hb < 1 || len(p.Wdt) != kd*p.Hb || len(p.A) != p.Hb || (p.Bdt != nil && len(p.Bdt) != p.Hb) {
		panic(fmt.Sprintf("ref: WeightParams (Hb=%d, len Wdt=%d, A=%d, Bdt=%d) do not fit Hkv*D=%d",
			p.Hb, len(p.Wdt), len(p.A), len(p.Bdt), kd))
	}
	if p.Form != FormExp && p.Form != FormLinear {
		panic(fmt.Sprintf("ref: unknown %v", p.Form))
	}
	vf = mat.NewDense(n, kd, v.Data)
	w = mat.NewDense(kd, p.Hb, p.Wdt)
	dt = mat.NewDense(n, p.Hb, nil)
	dt.Mul(vf, w)
	if p.Bdt != nil {
		for r := 0; r < n; r++ {
			for c := 0; c < p.Hb; c++ {
				dt.Set(r, c, dt.At(r, c)+p.Bdt[c])
			}
		}
	}
	return vf, w, dt
}

// weight returns delta for one dt and its bias head's a.
func weight(form WeightForm, a, dt float64) float64 {
	if form == FormExp {
		return math.Exp(a * Softplus(dt))
	}
	return a * Softplus(dt)
}

// DynamicWeights64 computes the weights of spec section 1 in float64, with
// no rounding, from v ([B, Lk, Hkv, D]); the result is a flat [B][Hb][Lk]
// slice, index (b*Hb+c)*Lk+j. Use it for finite differences; attention
// proper selects on the float32 values of DynamicWeights.
//
// It panics if p does not fit v.
func DynamicWeights64(v *Tensor4, p WeightParams) []float64 {
	_, _, dt := dtMatrix(v, p)
	delta := make([]float64, v.B*p.Hb*v.L)
	for b := 0; b < v.B; b++ {
		for j := 0; j < v.L; j++ {
			for c := 0; c < p.Hb; c++ {
				delta[(b*p.Hb+c)*v.L+j] = weight(p.Form, p.A[c], dt.At(b*v.L+j, c))
			}
		}
	}
	return delta
}

// DynamicWeights is DynamicWeights64 with every weight rounded to float32
// (and stored back as float64), since the spec stores delta as float32 and
// selects on those values. A weight beyond float32's range becomes ±Inf.
// Pass the result to Keep, Forward and Backward.
//
// It panics if p does not fit v.
func DynamicWeights(v *Tensor4, p WeightParams) []float64 {
	return Round32(DynamicWeights64(v, p))
}

// WeightsBackward carries dDelta (a flat [B][Hb][Lk] slice, as in
// Grads.DDelta) back through spec section 1, recomputing the weights in
// float64. It returns the gradients of A and Wdt (same layout as p.Wdt), of
// Bdt (nil when p.Bdt is nil) and the term of dV that flows through Vf; the
// total gradient of V is that term plus Grads.DV.
//
// With sp = softplus(dt) and softplus' = sigmoid:
//
//	exp form:    d delta/d dt = delta*A*sigmoid(dt),  d delta/dA = delta*sp
//	linear form: d delta/d dt = A*sigmoid(dt),        d delta/dA = sp
//
// then dWdt = Vfᵀ·ddt, dbdt = the column sums of ddt and dVf = ddt·Wdtᵀ.
//
// A key whose dDelta is 0 (one no row keeps, a padded key) adds nothing, not
// even 0 * NaN: a NaN or an infinity in its value row, or its weight, reaches
// no gradient (spec section 7).
//
// It panics if p or dDelta does not fit v.
func WeightsBackward(v *Tensor4, p WeightParams, dDelta []float64) (dA, dWdt, dBdt []float64, dV *Tensor4) {
	vf, w, dt := dtMatrix(v, p)
	if len(dDelta) != v.B*p.Hb*v.L {
		panic(fmt.Sprintf("ref: dDelta has %d values, want B*Hb*Lk = %d", len(dDelta), v.B*p.Hb*v.L))
	}
	n := v.B * v.L
	dA = make([]float64, p.Hb)
	ddt := mat.NewDense(n, p.Hb, nil)
	for b := 0; b < v.B; b++ {
		for j := 0; j < v.L; j++ {
			r := b*v.L + j
			for c := 0; c < p.Hb; c++ {
				gd := dDelta[(b*p.Hb+c)*v.L+j]
				if gd == 0 {
					continue // ddt stays 0
				}
				x, a := dt.At(r, c), p.A[c]
				sp, sig := Softplus(x), Sigmoid(x)
				if p.Form == FormExp {
					d := math.Exp(a * sp)
					ddt.Set(r, c, gd*d*a*sig)
					dA[c] += gd * d * sp
				} else {
					ddt.Set(r, c, gd*a*sig)
					dA[c] += gd * sp
				}
			}
		}
	}

	// dWdt = Vfᵀ·ddt over the rows with a nonzero ddt only (0 * NaN is NaN).
	k := v.H * v.D
	dWdt = make([]float64, k*p.Hb)
	for r := 0; r < n; r++ {
		for c := 0; c < p.Hb; c++ {
			if d := ddt.At(r, c); d != 0 {
				for f := 0; f < k; f++ {
					dWdt[f*p.Hb+c] += vf.At(r, f) * d
				}
			}
		}
	}

	if p.Bdt != nil {
		dBdt = make([]float64, p.Hb)
		for c := range dBdt {
			dBdt[c] = mat.Sum(ddt.ColView(c))
		}
	}

	dV = NewTensor4(v.B, v.L, v.H, v.D)
	dvf := mat.NewDense(n, v.H*v.D, dV.Data) // writes land in dV
	dvf.Mul(ddt, w.T())
	return dA, dWdt, dBdt, dV
}
