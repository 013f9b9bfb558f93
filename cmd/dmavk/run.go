package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/npy"
)

func init() {
	register(&command{
		name:  "run",
		short: "run one DMA forward on .npy inputs and write O, LSE (and weights) as .npy",
		usage: "--q Q.npy --k K.npy --v V.npy [--weights W.npy | --wdt WDT.npy --a A.npy [--bdt BDT.npy]] [flags]",
		run:   runRun,
	})
}

func runRun(args []string, stdout io.Writer) error {
	c := commands["run"]
	fs := newFlagSet(c, stdout)
	qPath := fs.String("q", "", "queries, [B, Lq, H, D] float32 or float16 (required)")
	kPath := fs.String("k", "", "keys, [B, Lk, Hkv, D] (required)")
	vPath := fs.String("v", "", "values, [B, Lk, Hkv, D] (required)")
	wPath := fs.String("weights", "", "given dynamic weights, float [B, Hb, Lk], Hb = H or Hkv")
	wdtPath := fs.String("wdt", "", "weight projection Wdt, [Hkv*D, Hb]: compute the weights from V")
	aPath := fs.String("a", "", "weight scale A, [Hb] (with --wdt)")
	bdtPath := fs.String("bdt", "", "weight bias bdt, [Hb] (optional, with --wdt)")
	form := fs.String("form", "exp", "weight form with --wdt: exp or linear")
	mode := fs.String("mode", "row", "selection: row, shared, none or explicit")
	window := fs.Int("window", 2048, "keys kept per row (row) or per head (shared)")
	causal := fs.Bool("causal", true, "causal attention, bottom-right aligned")
	scale := fs.Float64("scale", 0, "score scale; 0 means 1/sqrt(D)")
	softcap := fs.Float64("softcap", 0, "score softcap; 0 means off")
	padPath := fs.String("key-padding", "", "bool [B, Lk], true = key exists")
	maskPath := fs.String("mask", "", "explicit bool mask, broadcastable [B, H|Hkv|1, Lq|1, Lk|1]")
	biasPath := fs.String("bias", "", "explicit float bias, broadcastable like --mask")
	layout := fs.String("layout", "blhd", "storage layout on the GPU: blhd or bhld (files are always [B, L, H, D])")
	dtype := fs.String("dtype", "auto", "storage dtype: auto (from the files), float32, float16 or bfloat16 (rounded from the files' values)")
	oPath := fs.String("o", "o.npy", "output O, [B, Lq, H, D] in the storage dtype (bfloat16: widened to float32, exactly)")
	lsePath := fs.String("lse", "lse.npy", "output LSE, float32 [B, H, Lq]")
	outW := fs.String("out-weights", "", "output the weights used, float32 [B, Hb, Lk]")
	pngOut := addPNGFlags(fs)
	if err := parseFlags(c, fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *qPath == "" || *kPath == "" || *vPath == "" {
		return usagef("--q, --k and --v are required")
	}
	m, err := dma.ParseMode(*mode)
	if err != nil {
		return usageError{err}
	}
	var lay dma.Layout
	switch *layout {
	case "blhd":
		lay = dma.BLHD
	case "bhld":
		lay = dma.BHLD
	default:
		return usagef("--layout %q: blhd or bhld", *layout)
	}
	read := func(path, name string, rank int) (*npy.Array, error) {
		a, err := npy.Read(path)
		if err != nil {
			return nil, err
		}
		if rank > 0 && len(a.Shape) != rank {
			return nil, fmt.Errorf("%s: shape %v, want %d dimensions", name, a.Shape, rank)
		}
		return a, nil
	}
	qa, err := read(*qPath, "q", 4)
	if err != nil {
		return err
	}
	ka, err := read(*kPath, "k", 4)
	if err != nil {
		return err
	}
	va, err := read(*vPath, "v", 4)
	if err != nil {
		return err
	}
	dt := dma.Float32
	switch *dtype {
	case "auto":
		if qa.DType == "<f2" {
			dt = dma.Float16
		}
	case "float32":
	case "float16":
		dt = dma.Float16
	case "bfloat16":
		// .npy has no bfloat16 dtype: the files hold float32 (or any float), rounded
		// to nearest bfloat16 by Upload.
		dt = dma.BFloat16
	default:
		return usagef("--dtype %q: auto, float32, float16 or bfloat16", *dtype)
	}

	ctx := context.Background()
	dev, err := dma.Open(dma.Config{})
	if err != nil {
		return err
	}
	defer dev.Close()
	tensor := func(a *npy.Array) (*dma.Tensor, error) {
		s := dma.Shape{B: a.Shape[0], L: a.Shape[1], H: a.Shape[2], D: a.Shape[3]}
		t, err := dev.NewTensor(dt, s, lay)
		if err != nil {
			return nil, err
		}
		if dt == dma.Float16 && a.Half != nil {
			err = t.UploadHalf(ctx, a.Half)
		} else {
			err = t.Upload(ctx, a.Data)
		}
		if err != nil {
			t.Close()
			return nil, err
		}
		return t, nil
	}
	q, err := tensor(qa)
	if err != nil {
		return err
	}
	defer q.Close()
	k, err := tensor(ka)
	if err != nil {
		return err
	}
	defer k.Close()
	v, err := tensor(va)
	if err != nil {
		return err
	}
	defer v.Close()

	opt := dma.Options{Mode: m, Window: *window, Causal: *causal, Scale: float32(*scale), Softcap: float32(*softcap)}
	if *wPath != "" {
		wa, err := read(*wPath, "weights", 3)
		if err != nil {
			return err
		}
		w, err := dev.NewWeights(wa.Shape[0], wa.Shape[1], wa.Shape[2])
		if err != nil {
			return err
		}
		defer w.Close()
		if err := w.Upload(ctx, wa.Data); err != nil {
			return err
		}
		opt.Weights = w
	}
	if *wdtPath != "" {
		wdt, err := read(*wdtPath, "wdt", 2)
		if err != nil {
			return err
		}
		if *aPath == "" {
			return usagef("--wdt needs --a")
		}
		aa, err := read(*aPath, "a", 1)
		if err != nil {
			return err
		}
		wp := &dma.WeightParams{Wdt: wdt.Data, A: aa.Data, Hb: wdt.Shape[1]}
		if *bdtPath != "" {
			ba, err := read(*bdtPath, "bdt", 1)
			if err != nil {
				return err
			}
			wp.Bdt = ba.Data
		}
		switch *form {
		case "exp":
		case "linear":
			wp.Form = dma.FormLinear
		default:
			return usagef("--form %q: exp or linear", *form)
		}
		opt.WeightParams = wp
	}
	if *padPath != "" {
		pa, err := read(*padPath, "key-padding", 2)
		if err != nil {
			return err
		}
		kp, err := dev.NewKeyPadding(ctx, pa.Shape[0], pa.Shape[1], bools(pa.Data))
		if err != nil {
			return err
		}
		defer kp.Close()
		opt.KeyPadding = kp
	}
	if *maskPath != "" {
		ma, err := read(*maskPath, "mask", 4)
		if err != nil {
			return err
		}
		mk, err := dev.NewMask(ctx, maskShape(ma), bools(ma.Data))
		if err != nil {
			return err
		}
		defer mk.Close()
		opt.Mask = mk
	}
	if *biasPath != "" {
		ba, err := read(*biasPath, "bias", 4)
		if err != nil {
			return err
		}
		bb, err := dev.NewBias(ctx, maskShape(ba), ba.Data)
		if err != nil {
			return err
		}
		defer bb.Close()
		opt.Bias = bb
	}

	res, err := dev.Forward(ctx, q, k, v, opt)
	if err != nil {
		return err
	}
	defer res.Close()
	os := res.O.Shape()
	oShape := []int{os.B, os.L, os.H, os.D}
	if dt == dma.Float16 {
		bits, err := res.O.DownloadHalf(ctx)
		if err != nil {
			return err
		}
		err = npy.WriteFloat16(*oPath, oShape, bits)
		if err != nil {
			return err
		}
	} else {
		o, err := res.O.Download(ctx)
		if err != nil {
			return err
		}
		if err := npy.WriteFloat32(*oPath, oShape, o); err != nil {
			return err
		}
	}
	lse, err := res.LSE.Download(ctx)
	if err != nil {
		return err
	}
	if err := npy.WriteFloat32(*lsePath, []int{res.LSE.B, res.LSE.H, res.LSE.Lq}, lse); err != nil {
		return err
	}
	if *outW != "" {
		w := opt.Weights
		if res.Weights != nil {
			w = res.Weights
		}
		if w == nil {
			return fmt.Errorf("--out-weights: this call used no weights")
		}
		data, err := w.Download(ctx)
		if err != nil {
			return err
		}
		if err := npy.WriteFloat32(*outW, []int{w.B, w.Hb, w.Lk}, data); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s: O %v %v -> %s, LSE -> %s\n", dev.Name(), dt, os, *oPath, *lsePath)
	used := opt.Weights
	if res.Weights != nil {
		used = res.Weights
	}
	return pngOut.write(ctx, dev, used, q.Shape(), k.Shape(), opt, stdout)
}

func bools(x []float32) []bool {
	out := make([]bool, len(x))
	for i, v := range x {
		out[i] = v != 0
	}
	return out
}

func maskShape(a *npy.Array) dma.MaskShape {
	return dma.MaskShape{B: a.Shape[0], H: a.Shape[1], Lq: a.Shape[2], Lk: a.Shape[3]}
}
