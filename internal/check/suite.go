package check

import "github.com/dmavk/dmavk/dma"

// Suite lists the selftest's cases: every mode in fp32 and fp16 over awkward shapes
// (lengths that are no multiple of any tile, Lq != Lk both ways, GQA and MQA, every
// supported head dimension class, w = 1, w >= L, equal weights, rows with no kept key,
// large and negative weights, overflow-prone fp16 inputs, softcap, both layouts), and a
// few representative bf16 cases. long adds lengths that take a while on a CPU device.
func Suite(long bool) []Case {
	var cs []Case
	add := func(c Case) {
		if c.Window == 0 {
			c.Window = 16
		}
		cs = append(cs, c)
	}
	for _, dt := range []dma.DType{dma.Float32, dma.Float16} {
		for _, mode := range []dma.Mode{dma.ModeRow, dma.ModeShared, dma.ModeNone, dma.ModeExplicit} {
			base := Case{DType: dt, Mode: mode, Causal: true, B: 1, Lq: 77, Lk: 77, H: 4, Hkv: 2, D: 64}
			if mode == dma.ModeExplicit {
				base.Weights = WeightsNone
				base.Mask, base.Bias = true, true
			}
			add(base)
			c := base // Lq < Lk (decode-like chunk), MQA, BHLD
			c.Lq, c.Lk, c.Hkv, c.Layout, c.D = 5, 130, 1, dma.BHLD, 32
			add(c)
			c = base // Lq > Lk: leading rows keep nothing; key padding, Hb = H
			c.B, c.Lq, c.Lk, c.Padding, c.HbIsH, c.D = 2, 70, 40, true, true, 96
			add(c)
			c = base // not causal, softcap, D = 128
			c.Causal, c.Softcap, c.D, c.Lq, c.Lk = false, 30, 128, 33, 65
			add(c)
			c = base // D = 256
			c.D, c.Lq, c.Lk, c.H, c.Hkv = 256, 40, 40, 2, 2
			add(c)
		}
		// Decoding through a KV cache: a few rows over one to three slices of keys.
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 1, Lk: 1500, H: 4, Hkv: 2, D: 64, Window: 32, KVCache: true})
		add(Case{DType: dt, Mode: dma.ModeNone, Causal: true, B: 1, Lq: 3, Lk: 700, H: 4, Hkv: 1, D: 32, KVCache: true})
		// Mode shared: one selection over every cached key for a draft of three rows.
		// (Equal weights: the shared w are the last w keys, so the draft's first rows keep
		// fewer than w; mode row would give them w each.)
		add(Case{DType: dt, Mode: dma.ModeShared, Causal: true, B: 1, Lq: 3, Lk: 1300, H: 4, Hkv: 2, D: 64, Window: 40,
			Weights: WeightsEqual, HbIsH: true, KVCache: true})
		// Equal weights: the last key joins the best w and moves the carried threshold.
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 1, Lk: 3000, H: 4, Hkv: 2, D: 64, Window: 100,
			Weights: WeightsEqual, HbIsH: true, KVCache: true})
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 4, Lk: 2100, H: 4, Hkv: 2, D: 128, Window: 64,
			HbIsH: true, Softcap: 20, KVCache: true})
		// Forward with a few rows over many keys: the decode kernels (Path "decode").
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 3, Lk: 4500, H: 4, Hkv: 2, D: 64, Window: 100,
			Padding: true, Weights: WeightsParams, Form: dma.FormExp})
		add(Case{DType: dt, Mode: dma.ModeNone, B: 1, Lq: 2, Lk: 4097, H: 4, Hkv: 1, D: 32, Layout: dma.BHLD})
		add(Case{DType: dt, Mode: dma.ModeShared, Causal: true, B: 2, Lq: 4, Lk: 4200, H: 4, Hkv: 2, D: 64, Window: 50,
			Padding: true})
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 4, Lk: 5000, H: 4, Hkv: 2, D: 128, Window: 4096,
			HbIsH: true, Softcap: 20})
		// Selection corner cases.
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 50, Lk: 50, H: 2, Hkv: 2, D: 32, Window: 1})
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 50, Lk: 50, H: 2, Hkv: 1, D: 32, Window: 50})
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 100, Lk: 100, H: 2, Hkv: 2, D: 32, Window: 7, Weights: WeightsEqual})
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 90, Lk: 90, H: 4, Hkv: 2, D: 64, Window: 20, Weights: WeightsLarge})
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 65, Lk: 65, H: 4, Hkv: 2, D: 64, Window: 9, Weights: WeightsParams, Form: dma.FormExp})
		add(Case{DType: dt, Mode: dma.ModeShared, Causal: true, B: 1, Lq: 65, Lk: 65, H: 4, Hkv: 2, D: 64, Window: 9, Weights: WeightsParams, Form: dma.FormLinear, HbIsH: true})
		add(Case{DType: dt, Mode: dma.ModeNone, Causal: true, B: 1, Lq: 64, Lk: 64, H: 2, Hkv: 2, D: 64, InputScale: 30})
		if long {
			add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 1000, Lk: 1000, H: 4, Hkv: 2, D: 128, Window: 128})
			add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 3000, Lk: 3000, H: 2, Hkv: 1, D: 64, Window: 300})
			add(Case{DType: dt, Mode: dma.ModeShared, Causal: true, B: 1, Lq: 2000, Lk: 2000, H: 2, Hkv: 2, D: 128, Window: 256})
			// A decode step over a longer cache: many slices, ties, a small window.
			add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 2, Lk: 20000, H: 8, Hkv: 2, D: 128, Window: 300,
				Weights: WeightsEqual, KVCache: true})
			add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 1, Lk: 9000, H: 8, Hkv: 8, D: 64, Window: 2048,
				KVCache: true})
		}
	}
	// Backward (after the forward, both modes): every mode and dtype, GQA with both
	// bias-head counts, weights given and from V (both forms), Lq != Lk, padding,
	// softcap, mask and bias, both layouts, the largest head dim.
	for _, dt := range []dma.DType{dma.Float32, dma.Float16, dma.BFloat16} {
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 77, Lk: 77, H: 4, Hkv: 2, D: 64, Window: 9,
			Weights: WeightsParams, Form: dma.FormExp, Backward: true})
		add(Case{DType: dt, Mode: dma.ModeShared, Causal: true, B: 2, Lq: 70, Lk: 40, H: 4, Hkv: 2, D: 32, Window: 6,
			Padding: true, HbIsH: true, Layout: dma.BHLD, Backward: true})
		add(Case{DType: dt, Mode: dma.ModeNone, B: 1, Lq: 33, Lk: 65, H: 4, Hkv: 1, D: 128, Softcap: 30,
			Weights: WeightsParams, Form: dma.FormLinear, HbIsH: true, Backward: true})
		add(Case{DType: dt, Mode: dma.ModeExplicit, Causal: true, B: 1, Lq: 40, Lk: 40, H: 2, Hkv: 2, D: 256,
			Weights: WeightsNone, Mask: true, Bias: true, Backward: true})
	}
	// The tensor-core backward (coopmat2 devices; fp16 and bf16, modes row, shared and
	// none, at least one row chunk of queries): several selection blocks with padding and
	// MQA, Lq != Lk with softcap, GQA with bias heads per kv head, the largest head dim.
	for _, dt := range []dma.DType{dma.Float16, dma.BFloat16} {
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 300, Lk: 300, H: 4, Hkv: 1, D: 128, Window: 40,
			Padding: true, Backward: true})
		add(Case{DType: dt, Mode: dma.ModeNone, Causal: true, B: 1, Lq: 100, Lk: 130, H: 4, Hkv: 2, D: 64, Softcap: 30,
			Weights: WeightsParams, Form: dma.FormLinear, HbIsH: true, Backward: true})
		add(Case{DType: dt, Mode: dma.ModeShared, Causal: true, B: 2, Lq: 130, Lk: 90, H: 4, Hkv: 2, D: 64, Window: 20,
			Layout: dma.BHLD, Backward: true})
	}
	if long {
		add(Case{DType: dma.Float16, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 1000, Lk: 1000, H: 4, Hkv: 2, D: 128, Window: 128, Backward: true})
		add(Case{DType: dma.BFloat16, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 2500, Lk: 2500, H: 4, Hkv: 2, D: 128, Window: 256,
			Weights: WeightsParams, Form: dma.FormExp, Backward: true})
	}
	// Non-finite values (spec section 7): NaN and infinities in q, k, v and the weights,
	// on every path (portable, coopmat, coopmat2, decode, KV cache, backward); only the
	// rows that keep a non-finite key or read a non-finite query may show them.
	for _, dt := range []dma.DType{dma.Float32, dma.Float16, dma.BFloat16} {
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 90, Lk: 90, H: 4, Hkv: 2, D: 64, Window: 12, NonFinite: true})
		add(Case{DType: dt, Mode: dma.ModeShared, Causal: true, B: 2, Lq: 70, Lk: 40, H: 4, Hkv: 2, D: 32, Window: 6,
			Padding: true, HbIsH: true, Layout: dma.BHLD, NonFinite: true})
		add(Case{DType: dt, Mode: dma.ModeNone, B: 2, Lq: 33, Lk: 65, H: 4, Hkv: 1, D: 128, Softcap: 30, NonFinite: true})
		add(Case{DType: dt, Mode: dma.ModeExplicit, Causal: true, B: 2, Lq: 40, Lk: 40, H: 2, Hkv: 2, D: 64,
			Weights: WeightsNone, Mask: true, Bias: true, NonFinite: true})
		// The decode kernels, through Forward and through a KV cache (Attend, and
		// AppendAttendInto for one row in mode row).
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 3, Lk: 4200, H: 4, Hkv: 2, D: 64, Window: 50, NonFinite: true})
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 1, Lk: 1500, H: 4, Hkv: 2, D: 64, Window: 32,
			KVCache: true, NonFinite: true})
		add(Case{DType: dt, Mode: dma.ModeShared, Causal: true, B: 2, Lq: 3, Lk: 1300, H: 4, Hkv: 2, D: 64, Window: 40,
			HbIsH: true, KVCache: true, NonFinite: true})
		add(Case{DType: dt, Mode: dma.ModeNone, Causal: true, B: 2, Lq: 2, Lk: 400, H: 4, Hkv: 1, D: 32, KVCache: true, NonFinite: true})
		// Backward: weights given, and from V (a non-finite V makes a NaN weight).
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 77, Lk: 77, H: 4, Hkv: 2, D: 64, Window: 9,
			Backward: true, NonFinite: true})
		add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 65, Lk: 65, H: 4, Hkv: 1, D: 32, Window: 8, Softcap: 30,
			Weights: WeightsParams, Form: dma.FormLinear, HbIsH: true, Backward: true, NonFinite: true})
		// The tensor-core backward's exact route (16-bit, at least one row chunk).
		if dt != dma.Float32 {
			add(Case{DType: dt, Mode: dma.ModeRow, Causal: true, B: 2, Lq: 130, Lk: 200, H: 4, Hkv: 2, D: 64, Window: 16,
				Backward: true, NonFinite: true})
		}
	}
	// bfloat16: the conversions are the only code of its own (the math is the float32
	// path's, exercised above), so a few representative cases rather than the matrix:
	// every mode, both layouts, GQA and MQA, Lq != Lk both ways, padding, softcap, the
	// smallest and largest head dims, weights from V, large inputs.
	bf := dma.BFloat16
	add(Case{DType: bf, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 77, Lk: 77, H: 4, Hkv: 2, D: 64})
	add(Case{DType: bf, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 5, Lk: 130, H: 4, Hkv: 1, D: 32, Layout: dma.BHLD})
	add(Case{DType: bf, Mode: dma.ModeShared, Causal: true, B: 2, Lq: 70, Lk: 40, H: 4, Hkv: 2, D: 96, Padding: true, HbIsH: true})
	add(Case{DType: bf, Mode: dma.ModeNone, B: 1, Lq: 33, Lk: 65, H: 4, Hkv: 2, D: 128, Softcap: 30})
	add(Case{DType: bf, Mode: dma.ModeExplicit, Causal: true, B: 1, Lq: 40, Lk: 40, H: 2, Hkv: 2, D: 256, Weights: WeightsNone, Mask: true, Bias: true})
	add(Case{DType: bf, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 65, Lk: 65, H: 4, Hkv: 2, D: 64, Window: 9, Weights: WeightsParams, Form: dma.FormExp, Layout: dma.BHLD})
	add(Case{DType: bf, Mode: dma.ModeNone, Causal: true, B: 1, Lq: 64, Lk: 64, H: 2, Hkv: 2, D: 64, InputScale: 30})
	add(Case{DType: bf, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 2, Lk: 1200, H: 4, Hkv: 2, D: 64, KVCache: true})
	if long {
		add(Case{DType: bf, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 1000, Lk: 1000, H: 4, Hkv: 2, D: 128, Window: 128})
	}
	return cs
}
