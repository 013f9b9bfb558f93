package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/dmavk/dmavk/internal/matmul"
	"github.com/dmavk/dmavk/vk"
)

func init() {
	register(&command{
		name:  "peak",
		short: "measure the device's matrix TFLOP/s (best matmul path) and copy bandwidth",
		usage: "[--n 4096] [--copy-mib 1024] [--reps 10] [--json]",
		run:   runPeak,
	})
}

// peakResult is what `dmavk peak` measures; bench rows are compared with it.
type peakResult struct {
	Device      string  `json:"device"`
	MatmulPath  string  `json:"matmul_path"` // the best of MatmulPaths
	MatmulN     int     `json:"matmul_n"`
	MatmulTFLOP float64 `json:"matmul_tflops"` // fp16 inputs, fp32 accumulation; the best path's
	CopyGBs     float64 `json:"copy_gb_s"`     // bytes read + written per second
	// MatmulPaths are all fp16 paths measured, fastest first: coopmat2 and coopmat
	// where the device has them, portable only when it has neither.
	MatmulPaths []pathRate `json:"matmul_paths"`
	// CoopMat2Error says why a device with VK_NV_cooperative_matrix2 has no coopmat2
	// path (no workgroup scope, a pipeline the driver rejects, ...).
	CoopMat2Error string `json:"coopmat2_error,omitempty"`
}

// pathRate is one matmul path's measured rate.
type pathRate struct {
	Path   string  `json:"path"`
	Tiling string  `json:"tiling,omitempty"`
	TFLOP  float64 `json:"tflops"`
}

func runPeak(args []string, stdout io.Writer) error {
	c := commands["peak"]
	fs := newFlagSet(c, stdout)
	n := fs.Int("n", 4096, "matrix size of the n x n x n fp16 product")
	copyMiB := fs.Int("copy-mib", 1024, "bytes copied device-to-device, MiB")
	reps := fs.Int("reps", 10, "repetitions (median)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(c, fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *n < 16 || *copyMiB < 1 || *reps < 1 {
		return usagef("--n >= 16, --copy-mib >= 1, --reps >= 1")
	}
	in, err := vk.NewInstance(vk.Config{})
	if err != nil {
		return err
	}
	defer in.Close()
	pd, err := in.Choose()
	if err != nil {
		return err
	}
	d, err := in.Open(pd, vk.Features{})
	if err != nil {
		return err
	}
	defer d.Close()
	res, err := measurePeak(context.Background(), d, *n, int64(*copyMiB)<<20, *reps)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	also := ""
	for i, p := range res.MatmulPaths {
		if i > 0 {
			also += fmt.Sprintf("; also %s %.3g", p.Path, p.TFLOP)
		}
	}
	fmt.Fprintf(stdout, "%s\n  matrix: %.3g TFLOP/s (%s path, %d^3 fp16 -> fp32)%s\n  copy:   %.0f GB/s (read + write)\n",
		res.Device, res.MatmulTFLOP, res.MatmulPath, res.MatmulN, also, res.CopyGBs)
	for _, p := range res.MatmulPaths {
		if p.Tiling != "" {
			fmt.Fprintf(stdout, "  %s tiling: %s\n", p.Path, p.Tiling)
		}
	}
	if res.CoopMat2Error != "" {
		fmt.Fprintf(stdout, "  no coopmat2 path: %s\n", res.CoopMat2Error)
	}
	return nil
}

// peakPaths are the fp16 matmul paths to measure: every tensor-core path the device
// has, the portable one only when it has none.
func peakPaths(k *matmul.Kernel) []matmul.Path {
	var paths []matmul.Path
	for _, p := range []matmul.Path{matmul.CoopMat2, matmul.CoopMat} {
		if k.Has(p) {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		paths = []matmul.Path{matmul.Portable}
	}
	return paths
}

// bestFirst orders the rates fastest first (stable: ties keep the measuring order).
func bestFirst(rates []pathRate) {
	sort.SliceStable(rates, func(i, j int) bool { return rates[i].TFLOP > rates[j].TFLOP })
}

func measurePeak(ctx context.Context, d *vk.Device, n int, copyBytes int64, reps int) (peakResult, error) {
	res := peakResult{Device: d.Caps().Name, MatmulN: n}
	if caps := d.Caps(); !caps.Timestamps() {
		return res, fmt.Errorf("%s has no GPU timestamps", d.Caps().Name)
	}
	k, err := matmul.New(d)
	if err != nil {
		return res, err
	}
	defer k.Close()
	if d.Caps().CoopMat2 && !k.Has(matmul.CoopMat2) {
		res.CoopMat2Error = fmt.Sprint(k.CoopMat2Err())
	}
	ab := int64(n) * int64(n) * 2
	a, err := d.NewBuffer(ab)
	if err != nil {
		return res, err
	}
	defer a.Close()
	b, err := d.NewBuffer(ab)
	if err != nil {
		return res, err
	}
	defer b.Close()
	cb, err := d.NewBuffer(2 * ab)
	if err != nil {
		return res, err
	}
	defer cb.Close()
	// Random-looking fp16 bits in [-1, 1) (exponent below 15): zeros would flatter the rate.
	fill := func(buf *vk.Buffer) error {
		raw := make([]byte, buf.Size())
		x := uint32(12345)
		for i := 0; i+1 < len(raw); i += 2 {
			x = x*1664525 + 1013904223
			h := uint16(x>>16)&0x83ff | 0x3800
			raw[i], raw[i+1] = byte(h), byte(h>>8)
		}
		return buf.Upload(ctx, 0, raw)
	}
	if err := fill(a); err != nil {
		return res, err
	}
	if err := fill(b); err != nil {
		return res, err
	}
	for _, path := range peakPaths(k) {
		t, err := gpuTime(ctx, d, reps, func(r *vk.Recorder) error { return k.Record(r, path, true, a, b, cb, n, n, n) })
		if err != nil {
			return res, fmt.Errorf("%s matmul: %w", path, err)
		}
		pr := pathRate{Path: path.String(), TFLOP: 2 * float64(n) * float64(n) * float64(n) / t / 1e3}
		switch path {
		case matmul.CoopMat2:
			pr.Tiling = fmt.Sprintf("%v (shape %v)", k.CM2Tiling(), k.CM2Shape())
		case matmul.CoopMat:
			pr.Tiling = fmt.Sprintf("%v (shape %v)", k.Tiling(), k.Shape())
		}
		res.MatmulPaths = append(res.MatmulPaths, pr)
	}
	bestFirst(res.MatmulPaths)
	res.MatmulPath, res.MatmulTFLOP = res.MatmulPaths[0].Path, res.MatmulPaths[0].TFLOP
	src, err := d.NewBuffer(copyBytes)
	if err != nil {
		return res, err
	}
	defer src.Close()
	dst, err := d.NewBuffer(copyBytes)
	if err != nil {
		return res, err
	}
	defer dst.Close()
	t, err := gpuTime(ctx, d, reps, func(r *vk.Recorder) error { return r.Copy(src, 0, dst, 0, copyBytes) })
	if err != nil {
		return res, err
	}
	res.CopyGBs = 2 * float64(copyBytes) / t
	return res, nil
}

// gpuTime is the median GPU time, in nanoseconds, of reps Runs of record (after one
// warm-up), from timestamps around it.
func gpuTime(ctx context.Context, d *vk.Device, reps int, record func(*vk.Recorder) error) (float64, error) {
	var times []float64
	for i := 0; i < reps+1; i++ {
		ts, err := d.RunTimed(ctx, func(r *vk.Recorder) error {
			if err := r.Timestamp("start"); err != nil {
				return err
			}
			if err := record(r); err != nil {
				return err
			}
			return r.Timestamp("end")
		})
		if err != nil {
			return 0, err
		}
		if i > 0 {
			times = append(times, ts[1].Nanos)
		}
	}
	return median(times), nil
}
