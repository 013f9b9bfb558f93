package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
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

// runNotes receives what dmavk run says beside its results (the kernel path that ran).
var runNotes io.Writer = os.Stderr

// runReport is dmavk run's --json output.
type runReport struct {
	Device  string     `json:"device"`
	Path    string     `json:"path"`
	DType   string     `json:"dtype"`
	O       runOutput  `json:"o"`
	LSE     runOutput  `json:"lse"`
	Weights *runOutput `json:"weights,omitempty"`
}

type runOutput struct {
	File  string `json:"file"`
	Shape []int  `json:"shape"`
}

func runRun(args []string, stdout io.Writer) error {
	c := commands["run"]
	fs := newFlagSet(c, stdout)
	qPath := fs.String("q", "", "queries, [B, Lq, H, D] float32, float16 or float64 (rounded to float32) (required)")
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
	maskPath := fs.String("mask", "", "explicit mode: bool mask (true = keep), broadcastable [B, H|Hkv|1, Lq|1, Lk|1]; an additive float mask (0 keep, -inf drop) goes to --bias")
	biasPath := fs.String("bias", "", "explicit mode: float bias added to the scores (-inf drops a key), broadcastable like --mask")
	layout := fs.String("layout", "blhd", "storage layout on the GPU: blhd or bhld (files are always [B, L, H, D])")
	dtype := fs.String("dtype", "auto", "storage dtype: auto (from the files), float32, float16 or bfloat16 (rounded from the files' values)")
	oPath := fs.String("o", "o.npy", "output O, [B, Lq, H, D] in the storage dtype (bfloat16: widened to float32, exactly)")
	lsePath := fs.String("lse", "lse.npy", "output LSE, float32 [B, H, Lq]")
	outW := fs.String("out-weights", "", "output the weights used, float32 [B, Hb, Lk]")
	asJSON := fs.Bool("json", false, "print what ran and what was written as JSON")
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
	if err := checkRunFlags(fs); err != nil {
		return err
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
	read = floats(read)
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
		pa, err := readBools(*padPath, "--key-padding", 2)
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
		ma, err := readBools(*maskPath, "--mask", 4)
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
	outShape := res.O.Shape()
	oShape := []int{outShape.B, outShape.L, outShape.H, outShape.D}
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
	fmt.Fprintf(runNotes, "dmavk run: %s, path %s\n", dev.Name(), res.Path)
	used := opt.Weights
	if res.Weights != nil {
		used = res.Weights
	}
	if *asJSON {
		rep := runReport{Device: dev.Name(), Path: res.Path, DType: dt.String(),
			O:   runOutput{*oPath, oShape},
			LSE: runOutput{*lsePath, []int{res.LSE.B, res.LSE.H, res.LSE.Lq}}}
		if *outW != "" {
			rep.Weights = &runOutput{*outW, []int{used.B, used.Hb, used.Lk}}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
		return pngOut.write(ctx, dev, used, q.Shape(), k.Shape(), opt, io.Discard)
	}
	fmt.Fprintf(stdout, "%s: path %s, O %v %v -> %s, LSE -> %s\n", dev.Name(), res.Path, dt, outShape, *oPath, *lsePath)
	return pngOut.write(ctx, dev, used, q.Shape(), k.Shape(), opt, stdout)
}

// checkRunFlags refuses flags that would be ignored or that contradict each other.
func checkRunFlags(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"a", "bdt", "form"} {
		if set[name] && !set["wdt"] {
			return usagef("--%s needs --wdt: the weights are computed from V only with --wdt WDT.npy --a A.npy [--bdt BDT.npy]; weights computed before go to --weights", name)
		}
	}
	if set["wdt"] && !set["a"] {
		return usagef("--wdt needs --a (A [Hb], the weights' scale)")
	}
	if set["wdt"] && set["weights"] {
		return usagef("--weights and --wdt both give the weights: use one")
	}
	if m := fs.Lookup("mode").Value.String(); (m == "row" || m == "shared") && !set["wdt"] && !set["weights"] {
		return usagef("--mode %s selects keys by their weights: give --weights W.npy, or --wdt WDT.npy --a A.npy to compute them from V (--mode none attends to every key)", m)
	}
	return nil
}

type readFunc func(path, name string, rank int) (*npy.Array, error)

// floats wraps read to refuse bool files where numbers are wanted.
func floats(read readFunc) readFunc {
	return func(path, name string, rank int) (*npy.Array, error) {
		a, err := read(path, name, rank)
		if err != nil {
			return nil, err
		}
		if a.DType == "|b1" || a.DType == "<b1" {
			hint := ""
			if name == "bias" {
				hint = "; a bool mask goes to --mask"
			}
			return nil, fmt.Errorf("--%s %s: a bool array, want float32, float16 or float64%s", name, path, hint)
		}
		return a, nil
	}
}

// readBools reads a mask-like file, which must hold bools: a float file is
// ambiguous (1/0 keep/drop, or 0/-inf additive as PyTorch's float masks are).
func readBools(path, flagName string, rank int) (*npy.Array, error) {
	a, err := npy.Read(path)
	if err != nil {
		return nil, err
	}
	if a.DType != "|b1" && a.DType != "<b1" {
		hint := ""
		if flagName == "--mask" {
			hint = "; an additive float mask (0 keep, -inf drop) goes to --bias, which adds it to the scores"
		}
		return nil, fmt.Errorf("%s %s: dtype %s, want a bool array (true = keep; save it with np.save(path, m.astype(bool)))%s",
			flagName, path, a.DType, hint)
	}
	if len(a.Shape) != rank {
		return nil, fmt.Errorf("%s %s: shape %v, want %d dimensions", flagName, path, a.Shape, rank)
	}
	return a, nil
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
